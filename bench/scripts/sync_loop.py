#!/usr/bin/env python3
"""Small appends, each followed by fdatasync, into a file whose blocks are
already written: the journal's commit pattern without the journal. Run it
under `perf record -e block:block_rq_issue -a` to count what each commit
sends to the disk (bench/README.md, "Where inventoryd's time goes at
85ee467"): a data write (WS), a cache flush (FF), and an inode write (WSM)
when the file's timestamps have moved on since the last commit.

    perf record -e block:block_rq_issue -a -o /tmp/blk.data -- \
        python3 bench/scripts/sync_loop.py --dir /var/tmp
    perf script -i /tmp/blk.data | grep python3 | awk '{print $7}' | sort | uniq -c
"""

import argparse
import os
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dir", default=None, help="where the file goes (a disk, not tmpfs)")
parser.add_argument("--seconds", type=float, default=2.0)
parser.add_argument("--bytes", type=int, default=400, help="bytes appended per commit")
parser.add_argument("--pause-ms", type=float, default=0.0, help="sleep between commits")
args = parser.parse_args()

size = 64 << 20
with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
    fd = os.open(os.path.join(tmp, "log"), os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, bytes(size), 0)
    os.fsync(fd)
    time.sleep(0.5)
    record = b"x" * args.bytes
    offset = commits = 0
    start = time.monotonic()
    while time.monotonic() - start < args.seconds and offset + args.bytes <= size:
        os.pwrite(fd, record, offset)
        os.fdatasync(fd)
        offset += args.bytes
        commits += 1
        if args.pause_ms:
            time.sleep(args.pause_ms / 1000)
    os.close(fd)
print(f"{commits} commits of {args.bytes} bytes in {args.seconds:g} s")
