#!/bin/sh
# Captures what `nft -f` sends for a golden file, in a fresh network namespace, as a
# tests/captures/*.hex file (the format tests/netlink_support reads):
#   tests/tools/capture_golden.sh tests/golden/affinity.nft > tests/captures/golden/affinity.hex
set -eu
golden="$1"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
unshare -n strace -f -e trace=sendmsg -e write=3 -o "$log" nft -f "$golden"
echo "# What $(nft --version | cut -d' ' -f1-2) sends for $(basename "$golden"), on Linux $(uname -r), in a fresh network namespace:"
echo "#   unshare -n strace -f -e trace=sendmsg -e write=3 nft -f $(basename "$golden")"
# The transaction is the largest sendmsg (the others are cache dumps and the generation).
awk '
/sendmsg\(/ { n++ }
/^ *\|/ || /^[0-9]+ +\|/ {
    sub(/^[0-9]+ +/, "")
    line = substr($0, 11, 49)
    gsub(/  +/, " ", line); sub(/^ /, "", line); sub(/ $/, "", line)
    data[n] = data[n] line "\n"
    cnt = split(line, parts, " "); bytes[n] += cnt
}
END {
    best = 0
    for (i in bytes) if (bytes[i] > bytes[best]) best = i
    printf "# sendmsg %d bytes\n%s", bytes[best], data[best]
}' "$log"
