#!/usr/bin/env python3
"""Per-operation counts from a callgrind profile of a server under load.

    callgrind-per-op.py PROFILE N 'label=function' ...

For each label, the inclusive instruction count of the first function whose
name starts with `function` (as callgrind_annotate prints it), divided by N,
the operations the load made; `PROGRAM TOTALS` counts every thread. Also the
allocations (calls to mimalloc's `mi_malloc_aligned`) per operation. Where
the script dumped callgrind's counters just before the load
(`callgrind_control -d`, as scripts/load-authority.sh does), PROFILE holds
the load alone; otherwise the server's start and the set-up's few requests
are in the totals too (over a thousand operations, well under 1%).
"""
import re
import subprocess
import sys


def main() -> None:
    profile, n, *rows = sys.argv[1:]
    n = max(int(n), 1)
    inclusive = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", profile], capture_output=True, text=True, check=True
    ).stdout
    calls = subprocess.run(
        ["callgrind_annotate", "--tree=calling", "--threshold=100", profile], capture_output=True, text=True, check=True
    ).stdout

    def count(name: str) -> int:
        m = re.search(r"^\s*([\d,]+) \([ \d.]+%\)\s+(?:\S*?:)?" + re.escape(name), inclusive, re.M)
        return int(m.group(1).replace(",", "")) if m else 0

    allocations = sum(
        int(m.group(1).replace(",", "")) for m in re.finditer(r">\s+\S+:mi_malloc_aligned \(([\d,]+)x\)", calls)
    )
    print(f"== callgrind, {n} operations: per operation")
    for row in rows:
        label, _, name = row.partition("=")
        print(f"{label:58} {count(name) / n:>10,.0f} instructions")
    print(f"{'allocations (mi_malloc_aligned calls, all threads)':58} {allocations / n:>10,.1f}")


if __name__ == "__main__":
    main()
