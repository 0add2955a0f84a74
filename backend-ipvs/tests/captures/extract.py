#!/usr/bin/env python3
"""Prints the IPVS generic-netlink messages of a capture (see capture.sh): one block per
netlink message, its header as strace decoded it, then its payload (genlmsghdr + attributes)
as hex, 4 bytes per group. Usage: ./extract.py add_service_tcp_rr.strace"""
import re, sys

HDR = re.compile(r'\{nlmsg_len=(\d+), nlmsg_type=(\w+), nlmsg_flags=([\w|]+), nlmsg_seq=\d+, nlmsg_pid=\d+\}, "((?:\\x[0-9a-f]{2})*)"')
for line in open(sys.argv[1]):
    if 'MSG_PEEK' in line:
        continue  # libnl peeks first; the real read follows
    call = line.split('(')[0]
    for m in HDR.finditer(line):
        length, typ, flags, data = m.groups()
        if typ != 'IPVS':
            continue
        raw = bytes.fromhex(data.replace('\\x', ''))
        print(f'{call} len={length} type={typ} flags={flags} payload={len(raw)}')
        print('  ' + ' '.join(raw[i:i + 4].hex() for i in range(0, len(raw), 4)))
