#!/bin/sh
# Build the experiment's extension into build/ (needs gcc, Python headers, OpenSSL headers).
set -e
cd "$(dirname "$0")"
mkdir -p build
INC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
EXT=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
gcc -O2 -Wall -shared -fPIC -I"$INC" espnative.c -o "build/espnative$EXT" -lcrypto
echo "built build/espnative$EXT"
