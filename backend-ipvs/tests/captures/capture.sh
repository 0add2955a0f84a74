#!/bin/bash
# Captures the generic-netlink messages ipvsadm exchanges with the kernel.
# Runs INSIDE the VM guest (the host kernel has no IPVS):
#
#   VMTEST_EXTRA_BINS=/usr/bin/strace \
#     ../../../scripts/vm/run-in-vm --share "$PWD" -- ./capture.sh
#
# Each command's sendmsg/recvmsg calls are written, as strace prints them
# (-xx: every byte in hex), to <name>.strace next to this script.
set -euo pipefail
cd "$(dirname "$0")"

cap() { # name ipvsadm-args...
    local name=$1; shift
    echo "== $name: ipvsadm $*"
    strace -xx -s 65536 -e trace=sendmsg,recvmsg -o "$name.strace" ipvsadm "$@"
}

uname -r >kernel.txt
ipvsadm --version >>kernel.txt 2>&1 || true
cap add_service_tcp_rr      -A -t 198.18.0.10:80 -s rr
cap add_dest_masq_weight2   -a -t 198.18.0.10:80 -r 198.18.1.10:8080 -m -w 2
cap add_service_udp6_mh     -A -u '[2001:db8::10]:53' -s mh -b flag-1,flag-2
cap add_service_persistent  -A -t 198.18.0.11:443 -s wlc -p 600
cap list_numeric            -Ln
cap edit_dest_weight0       -e -t 198.18.0.10:80 -r 198.18.1.10:8080 -m -w 0
cap del_dest                -d -t 198.18.0.10:80 -r 198.18.1.10:8080
cap del_service             -D -t 198.18.0.10:80
cap set_timeouts            --set 900 120 300
cap list_timeouts           -L --timeout
cap flush                   -C
