"""Parses the authority's /metrics with prometheus_client's OpenMetrics
parser (the reference implementation's), and prints the metric family names
with their sample counts as JSON. A parse error fails the test.

usage: parse_metrics.py METRICS_URL
"""
import json
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    assert ctype.startswith("application/openmetrics-text"), ctype
    families = {f.name: [(s.name, s.labels, s.value) for s in f.samples]
                for f in text_string_to_metric_families(text)}
    print(json.dumps(families))
    return 0


if __name__ == "__main__":
    sys.exit(main())
