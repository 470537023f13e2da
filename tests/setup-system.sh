#!/bin/sh
# System packages the test suite uses:
#   tshark                    Wireshark 4.0 decrypts our ESP captures
#   strongSwan (charon, swanctl; standard plugins: openssl, gcm; extra plugins: kernel-libipsec,
#             curve25519, chapoly)
#                             the IKEv2/ESP interop peer (tests/interop/strongswan.py)
#   iperf3 iputils-ping tcpdump
#                             traffic and captures through the tunnels
#   gcc python3-dev libipsec-mb-dev
#                             build the ipsecmb backend's C extension at `pip install` (setup.py)
# Installed only when running as root on a Debian/Ubuntu machine; elsewhere the tests that need
# them skip with a reason.  Safe to run twice, and fast when everything is there: presence is
# checked by file, apt-get runs only for what is missing.
set -e
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-system: not root or no apt-get: skipping system packages (tshark/strongSwan tests will skip)"
    exit 0
fi
missing=""
need() { # package, file that proves it is installed
    [ -e "$2" ] || missing="$missing $1"
}
need tshark                      /usr/bin/tshark
need strongswan-charon           /usr/lib/ipsec/charon
need strongswan-swanctl          /usr/sbin/swanctl
need libstrongswan-standard-plugins /usr/lib/ipsec/plugins/libstrongswan-openssl.so
need libcharon-extra-plugins     /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so
need libstrongswan-extra-plugins /usr/lib/ipsec/plugins/libstrongswan-curve25519.so
need iperf3                      /usr/bin/iperf3
need iputils-ping                /usr/bin/ping
need tcpdump                     /usr/bin/tcpdump
need gcc                         /usr/bin/gcc
need libipsec-mb-dev             /usr/include/intel-ipsec-mb.h
# Python's headers: the running interpreter's own (a pyenv or venv build has them already).
[ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null)/Python.h" ] \
    || missing="$missing python3-dev"
if [ -n "$missing" ]; then
    echo "setup-system: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    # output only when something fails (debconf chatters on stderr even when all is well)
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends $missing; } >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        echo "setup-system: apt-get failed for:$missing" >&2
        exit 1
    fi
    rm -f "$log"
fi
echo "setup-system: ok"
