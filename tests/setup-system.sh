#!/bin/sh
# System packages the test suite uses: tshark (Wireshark 4.0 decrypts our ESP captures).
# Installed only when running as root on a Debian/Ubuntu machine; elsewhere the tests that need
# them skip with a reason.  Safe to run twice.
set -e
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-system: not root or no apt-get: skipping system packages (tshark tests will skip)"
    exit 0
fi
missing=""
command -v tshark >/dev/null 2>&1 || missing="$missing tshark"
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
echo "setup-system: ok"
