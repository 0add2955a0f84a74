#!/usr/bin/env python3
"""Prints the nfnetlink messages of a capture (see capture.sh): one line per netlink message
(direction, nlmsghdr fields), then its payload (nfgenmsg + attributes) as hex, 4 bytes per
group. A datagram holding many messages (a batch, a dump) is split into its messages.
Usage: ./extract.py restore_adds.strace"""
import re, struct, sys

DUMP = re.compile(r'^ \| [0-9a-f]{5}  ((?:[0-9a-f]{2} {1,2}){1,16})')
call, buf = None, bytearray()

def flush():
    off = 0
    while off + 16 <= len(buf):
        length, typ, flags, seq, pid = struct.unpack_from('<IHHII', buf, off)
        if length < 16:
            break
        payload = bytes(buf[off + 16:off + length])
        print(f'{call} len={length} type=0x{typ:04x} flags=0x{flags:04x} seq={seq}')
        print('  ' + ' '.join(payload[i:i + 4].hex() for i in range(0, len(payload), 4)))
        off += (length + 3) & ~3

for line in open(sys.argv[1]):
    m = DUMP.match(line)
    if m:
        buf += bytes.fromhex(m.group(1).replace(' ', ''))
        continue
    if line.startswith(' *'):
        continue
    flush()
    buf = bytearray()
    call = line.split('(')[0]
flush()
