#!/bin/sh
# Build and run perf/ipsecmb_limit.c: intel-ipsec-mb's own rate from C (one JSON line per
# figure).  Needs gcc and libipsec-mb-dev.   perf/ipsecmb_limit.sh [COUNT] [OUT.jsonl]
set -e
here=$(dirname "$0")
bin=$(mktemp -d)/ipsecmb_limit
gcc -O2 -Wall -o "$bin" "$here/ipsecmb_limit.c" -lIPSec_MB
out=${2:-$here/results/ipsecmb_limit.jsonl}
"$bin" "${1:-400000}" | tee "$out"
rm -f "$bin"
