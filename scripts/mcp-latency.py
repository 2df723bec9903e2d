"""Latency the MCP proxy adds: the same tools/call sent N times straight to a
FastMCP server and through `mandate mcp` in front of it, interleaved (one
direct, one proxied) so machine noise hits both alike. One keep-alive
connection each; DPoP proofs are made before timing (one per proxied call).

    python3 mcp-latency.py DIRECT_URL PROXY_URL MANDATE INSTANCE PROOFS_FILE N [NGINX_URL]

With NGINX_URL, nginx `proxy_pass` in front of the same server is timed in
the same rounds: what a plain reverse proxy adds, for comparison.
"""

import http.client
import json
import statistics
import sys
import time
from urllib.parse import urlparse

direct_url, proxy_url, mandate, instance, proofs_file, n = sys.argv[1:7]
n = int(n)
nginx_url = sys.argv[7] if len(sys.argv) > 7 else None
proofs = open(proofs_file).read().split()
PING = __import__("os").environ.get("PING") == "1"
ACCEPT = "application/json, text/event-stream"


class Endpoint:
    def __init__(self, url, extra):
        u = urlparse(url)
        self.path = u.path
        self.conn = http.client.HTTPConnection(u.hostname, u.port)
        self.extra = extra
        self.session = None
        self.next_id = 0

    def post(self, body, proof=None):
        headers = {"Content-Type": "application/json", "Accept": ACCEPT, **self.extra}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = "2025-06-18"
        if proof:
            headers["DPoP"] = proof
        self.conn.request("POST", self.path, json.dumps(body), headers)
        r = self.conn.getresponse()
        data = r.read()
        if r.getheader("mcp-session-id"):
            self.session = r.getheader("mcp-session-id")
        return r.status, data

    def start(self):
        st, _ = self.post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "latency", "version": "1"}}})
        assert st == 200, st
        st, _ = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert st in (200, 202), st

    def call(self, proof=None):
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": "ping"} if PING else {"jsonrpc": "2.0", "id": self.next_id, "method": "tools/call",
                "params": {"name": "search_vendors", "arguments": {"category": "logistics", "region": "north-america"}}}
        t = time.perf_counter_ns()
        st, data = self.post(body, proof)
        dt = time.perf_counter_ns() - t
        if st != 200 or b'"error"' in data or b"isError\":true" in data:
            raise SystemExit(f"call failed: {st} {data[:300]!r}")
        return dt / 1000.0


direct = Endpoint(direct_url, {})
proxied = Endpoint(proxy_url, {"Mandate": mandate, "Mandate-Agent-Instance": instance})
nginx = Endpoint(nginx_url, {}) if nginx_url else None
direct.start()
proxied.start()
if nginx:
    nginx.start()
# Warm every path.
for i in range(20):
    direct.call()
    proxied.call(proofs[i])
    if nginx:
        nginx.call()
d, p, g = [], [], []
for i in range(n):
    d.append(direct.call())
    p.append(proxied.call(proofs[20 + i]))
    if nginx:
        g.append(nginx.call())


def q(xs, f):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(f * len(xs)))]


added = [b - a for a, b in zip(d, p)]
extra = {}
if g:
    extra = {"nginx_us": {"p50": round(q(g, 0.5)), "p99": round(q(g, 0.99))},
             "nginx_added_us": {"p50": round(q(g, 0.5) - q(d, 0.5)), "p99": round(q(g, 0.99) - q(d, 0.99)),
                                "paired_median": round(statistics.median([c - a for a, c in zip(d, g)]))}}
print(json.dumps({
    "calls": n,
    "direct_us": {"p50": round(q(d, 0.5)), "p99": round(q(d, 0.99))},
    "proxy_us": {"p50": round(q(p, 0.5)), "p99": round(q(p, 0.99))},
    "added_us": {"p50": round(q(p, 0.5) - q(d, 0.5)), "p99": round(q(p, 0.99) - q(d, 0.99)),
                 "paired_median": round(statistics.median(added))},
    **extra,
}))
