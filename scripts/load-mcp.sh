#!/usr/bin/env bash
# Latency the MCP proxy adds over a direct Streamable HTTP connection to the
# same FastMCP server: p50 and p99 of N tools/call (default 2000), each one
# through `mandate mcp` with a fresh DPoP proof, interleaved with direct ones.
#   scripts/load-mcp.sh [N=2000]
# PING=1 sends `ping` instead (relayed, nothing decided: the cost of the hop
# alone); POP=bearer turns proofs off (development mode); PERF=1 prints a
# perf profile of the proxy.
# nginx `proxy_pass` in front of the same server is timed in the same rounds
# (what a plain reverse proxy adds). Needs python3 with the `mcp` package
# (scripts/test installs it), nginx and curl.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-2000}"
cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S=$(port); M=$(port); N=$(port)

"$bin" serve --data-dir data --listen 127.0.0.1:0 2> serve.log & pids+=($!)
for _ in $(seq 100); do grep -q listening serve.log 2>/dev/null && break; sleep 0.1; done
addr="$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' serve.log)"
tok() { "$bin" token --data-dir data --sub "$1" --role "$2" --ttl 7200; }
tok mcp-1 enforcer > enforcer.token
agent=$(tok agent-7 agent); principal=$(tok vp@acme.example principal)
"$bin" keygen --out holder.jwk > holder.pub.jwk
cat > req.json <<JSON
{"principal": "vp@acme.example", "agent": {"id": "urn:agent:procurement/vendor-sourcing@3.2", "instance": "inst-1", "cnf": {"jwk": $(cat holder.pub.jwk)}},
 "purpose": {"objective": "Source a backup logistics vendor", "business_context": "Load test"},
 "authorization_details": [{"type": "vendor_portal", "locations": ["https://vendor-portal.example.com"],
   "resource": {"category": "logistics", "region": "north-america"}, "actions": ["search"]}],
 "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z"},
 "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}}
JSON
rid=$(curl -s -X POST "http://$addr/v1/requests" -H "Authorization: Bearer $agent" --data @req.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
mandate=$(curl -s -X POST "http://$addr/v1/requests/$rid/approve" -H "Authorization: Bearer $principal" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mandate"])')

python3 "$root/crates/mandate-cli/tests/interop/mcp_vendor_server.py" "$work/counts.json" http "$S" & pids+=($!)
cat > mcp.toml <<TOML
listen = "127.0.0.1:$M"
authority = "http://$addr"
token_file = "enforcer.token"
proof_of_possession = "${POP:-required}"

[[server]]
name = "vendors"
url = "http://127.0.0.1:$S/mcp"
location_base = "https://vendor-portal.example.com"

[[tool]]
name = "search_vendors"
type = "vendor_portal"
action = "search"
resource = { category = "{category}", region = "{region}" }
TOML
"$bin" mcp --config mcp.toml 2> mcp.log & pids+=($!); mcp_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$M/_mandate/healthz" | grep -q '"fresh":true' && break; sleep 0.1; done
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$S/mcp" && break; sleep 0.1; done
mkdir -p nginx/tmp
cat > nginx/mcp.conf <<NGINX
worker_processes 1;
pid mcp.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path tmp; proxy_temp_path tmp;
  upstream fastmcp { server 127.0.0.1:$S; keepalive 8; }
  server { listen 127.0.0.1:$N; location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host 127.0.0.1:$S; proxy_buffering off; proxy_pass http://fastmcp; } }
}
NGINX
nginx -p "$work/nginx" -c mcp.conf -g 'daemon off;' & pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$N/mcp" && break; sleep 0.1; done
"$bin" dpop --key holder.jwk --method POST --url "http://127.0.0.1:$M/mcp" --count $((n + 20)) > proofs.txt
if [ -n "${PERF:-}" ]; then perf record -F 2000 -g -p "$mcp_pid" -o "$work/perf.data" 2>/dev/null & perf_pid=$!; sleep 0.3; fi
python3 "$root/scripts/mcp-latency.py" "http://127.0.0.1:$S/mcp" "http://127.0.0.1:$M/mcp" "$mandate" inst-1 proofs.txt "$n" "http://127.0.0.1:$N/mcp"
if [ -n "${PERF:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true; perf report -i "$work/perf.data" --no-children --sort dso,symbol -g none --percent-limit 0.7 2>/dev/null | grep -v "^#" | grep "%" | head -60; fi
