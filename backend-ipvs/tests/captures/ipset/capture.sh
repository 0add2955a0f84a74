#!/bin/bash
# Captures the nfnetlink messages the ipset tool exchanges with the kernel.
# The host kernel has ipset (it has no IPVS), so this runs on the host, in a throw-away
# network namespace (ipsets are per namespace, nothing outside it is touched):
#
#   sudo unshare -n ./capture.sh
#
# Each command's sendto/sendmsg/recvmsg calls are written to <name>.strace next to this
# script: strace's decoding of the nlmsghdr, then every byte of the buffer (-e write=/read=
# of the netlink socket, fd 3) as a hex dump. Those dumps are the bytes in the tests.
set -euo pipefail
cd "$(dirname "$0")"
[[ $(ipset list -n | wc -l) == 0 ]] || { echo "run me in a fresh namespace (unshare -n)" >&2; exit 1; }

cap() { # name ipset-args...
    local name=$1; shift
    echo "== $name: ipset $*"
    strace -xx -s 65536 -e trace=sendto,sendmsg,recvmsg -e write=3 -e read=3 \
        -o "$name.strace" ipset "$@" || true
}
capin() { # name input (ipset restore from stdin)
    local name=$1 input=$2
    echo "== $name: ipset restore <<< $input"
    printf '%s\n' "$input" >"$name.input"
    strace -xx -s 65536 -e trace=sendto,sendmsg,recvmsg -e write=3 -e read=3 \
        -o "$name.strace" ipset restore <"$name.input" || true
}

{ uname -r; ipset --version; } >kernel.txt
cap create_ipport4     create SVCP-T-IPPORT hash:ip,port family inet maxelem 1048576
cap create_ipportip6   create SVCP-T-LOOP6 hash:ip,port,ip family inet6 maxelem 1048576
cap create_ipportnet4  create SVCP-T-SRC hash:ip,port,net family inet maxelem 1048576
cap create_net4        create SVCP-T-CIDR hash:net family inet maxelem 1048576
cap add_ipport4        add SVCP-T-IPPORT 198.18.0.1,tcp:80
capin restore_adds     "add SVCP-T-IPPORT 198.18.0.2,udp:53 -exist
add SVCP-T-IPPORT 198.18.0.3,sctp:9 -exist
add SVCP-T-LOOP6 2001:db8::1,tcp:8080,2001:db8::1 -exist
add SVCP-T-SRC 198.18.0.4,tcp:443,198.19.0.0/16 -exist
add SVCP-T-CIDR 198.18.128.0/17 -exist"
capin restore_dels     "del SVCP-T-IPPORT 198.18.0.3,sctp:9 -exist
del SVCP-T-IPPORT 198.18.0.9,tcp:1 -exist"
cap err_exists         add SVCP-T-IPPORT 198.18.0.2,udp:53
capin err_restore_line "add SVCP-T-IPPORT 198.18.0.5,tcp:1
add SVCP-T-IPPORT 198.18.0.2,udp:53
add SVCP-T-IPPORT 198.18.0.6,tcp:1"
cap list_ipport4       list SVCP-T-IPPORT
cap list_all           list
cap list_names         list -n
cap create_temp        create SVCP-T-IPPORT-T hash:ip,port family inet maxelem 1048576 -exist
cap swap               swap SVCP-T-IPPORT-T SVCP-T-IPPORT
cap flush              flush SVCP-T-IPPORT-T
cap rename             rename SVCP-T-IPPORT-T SVCP-T-OLD
cap destroy            destroy SVCP-T-OLD
cap err_missing_set    add SVCP-T-NONE 198.18.0.1,tcp:80
cap err_wrong_family   add SVCP-T-IPPORT 2001:db8::1,tcp:80
cap err_create_exists  create SVCP-T-IPPORT hash:ip,port family inet maxelem 65536
