"""The summary of a load script's runs (scripts/load-gateway.sh,
scripts/load-gateway-mtls.sh): per target and connection count, the median
of the rounds, and each target's ratios to the base target.

    python3 scripts/load-summary.py RESULTS.csv BASES [UNDER]

RESULTS.csv has one row a run: name, connections, round, req/s, p50, p99,
server CPU microseconds a request. BASES names the targets the others are
compared with (nginx proxy_pass; several, comma-separated); UNDER, if
given, one that is only reported (the upstream alone). Ratios are given per round too: rounds run side by
side, so theirs are the steadier figures on a noisy machine. The CPU a
request costs the servers (every server process, the load generator left
out) is the figure that moves least with the host's other load.
"""

import csv
import statistics
import sys


def us(text):
    for unit, factor in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(f"latency {text!r}: no unit")


def main(path, bases, under=None):
    bases = bases.split(",")
    rows = list(csv.reader(open(path)))
    names = list(dict.fromkeys(r[0] for r in rows))
    for conns in sorted({int(r[1]) for r in rows}, reverse=True):
        print(f"-- {conns} connection(s): median of rounds (each round's req/s in brackets)")
        runs = {n: [r for r in rows if r[0] == n and int(r[1]) == conns] for n in names}
        med = {}
        for n, rs in runs.items():
            rps = [float(r[3]) for r in rs]
            med[n] = {
                "rps": statistics.median(rps),
                "p50": statistics.median(us(r[4]) for r in rs),
                "p99": statistics.median(us(r[5]) for r in rs),
                "cpu": statistics.median(float(r[6]) for r in rs),
            }
            m = med[n]
            print(f"{n:30} {m['rps']:10.0f} req/s  p50 {m['p50']:7.0f} us  p99 {m['p99']:7.0f} us"
                  f"  server CPU {m['cpu']:6.1f} us/req   [{' '.join(f'{x:.0f}' for x in rps)}]")
        for base in bases:
            if base not in med:
                continue
            b = med[base]
            for n in names:
                if n in bases or n == under:
                    continue
                per = [float(a[3]) / float(c[3]) for a, c in zip(runs[n], runs[base])]
                cpu = [float(c[6]) / float(a[6]) for a, c in zip(runs[n], runs[base]) if float(a[6])]
                line = (f"{n}: {med[n]['rps'] / b['rps']:.2f}x {base} throughput "
                        f"(rounds {' '.join(f'{x:.2f}' for x in per)}), p50 {med[n]['p50'] - b['p50']:+.0f} us; "
                        f"CPU a request, {base}'s over this one's: {statistics.median(cpu) if cpu else 0:.2f}x "
                        f"(rounds {' '.join(f'{x:.2f}' for x in cpu)})")
                if under in med:
                    line += f"; p50 {med[n]['p50'] - med[under]['p50']:+.0f} us vs {under}"
                print(line)


if __name__ == "__main__":
    main(*sys.argv[1:])
