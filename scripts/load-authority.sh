#!/usr/bin/env bash
# Decisions per second through the HTTP API with durable audit on, then the
# audit log's verify rate. Bounded: DURATION seconds of load on loopback.
#   scripts/load-authority.sh [DURATION=10] [CONNECTIONS=32]
# With MANDATE_DATABASE=postgres://… the authority runs on that (empty)
# PostgreSQL database instead of the embedded file.
# Needs wrk (Debian: apt-get install wrk) and curl.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-10}"; conns="${2:-32}"
cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
work="$(mktemp -d)"; server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
db=(); [ -n "${MANDATE_DATABASE:-}" ] && db=(--database "$MANDATE_DATABASE")
"$bin" serve --data-dir data --listen 127.0.0.1:0 "${db[@]}" 2> serve.log &
server=$!
for _ in $(seq 100); do grep -q listening serve.log 2>/dev/null && break; sleep 0.1; done
addr="$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' serve.log)"
tok() { "$bin" token --data-dir data --sub "$1" --role "$2" --ttl 3600; }
agent=$(tok agent-7 agent); principal=$(tok vp-supply-chain@example.com principal)
admin=$(tok admin@example.com admin); enforcer=$(tok gateway-1 enforcer)
api() { curl -s -X "$1" "http://$addr$2" -H "Authorization: Bearer $3" -H 'content-type: application/json' ${4:+--data "@$4"}; }
# The agent binds its holder key; every decision carries a fresh DPoP proof
# by it (made ahead of the run, one per request, a file per wrk thread).
"$bin" keygen --out holder.jwk > holder.pub.jwk
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["agent"]["cnf"]={"jwk": json.load(open("holder.pub.jwk"))}; json.dump(r, open("request.json","w"))' "$root/testdata/examples/authority-request.json"
rid=$(api POST /v1/requests "$agent" request.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api POST "/v1/requests/$rid/approve" "$principal" > approved.json
api PUT /v1/facts "$admin" "$root/testdata/examples/facts-active.json" > /dev/null
python3 - "$enforcer" <<'PY'
import json, sys
a = json.load(open("approved.json"))
body = json.dumps({"subject": {"type": "agent", "id": "urn:agent:procurement/vendor-sourcing@3.2", "properties": {"mandate": a["mandate"]}},
  "context": {"agent_instance": "inst-7f2a-b8c4", "htm": "POST", "htu": "https://pep.example/search", "dpop": "@PROOF@"},
  "action": {"name": "search"}, "resource": {"type": "vendor_portal", "id": "https://vendor-portal.example.com/search",
  "properties": {"category": "logistics", "region": "north-america", "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}})
head, tail = body.split("@PROOF@")
open("decide.lua", "w").write(
  'wrk.method = "POST"\n'
  f'wrk.headers["Content-Type"] = "application/json"\n'
  f'wrk.headers["Authorization"] = "Bearer {sys.argv[1]}"\n'
  'local n = 0\n'
  'function setup(thread) n = n + 1; thread:set("id", n) end\n'
  'local proofs, i = {}, 0\n'
  'function init(args) for line in io.lines("proofs." .. id) do proofs[#proofs + 1] = line end end\n'
  f'local head, tail = {json.dumps(head)}, {json.dumps(tail)}\n'
  'function request() i = i + 1; return wrk.format(nil, nil, nil, head .. proofs[i] .. tail) end\n'
  'response = function(status, headers, body)\n'
  '  if status ~= 200 or not string.find(body, \'"decision":true\', 1, true) then wrk.thread:stop() end\n'
  'end\n')
PY
for t in 1 2; do
  "$bin" dpop --key holder.jwk --method POST --url https://pep.example/search --count $((duration * 25000)) > "proofs.$t"
done
echo "== ${duration}s of POST /access/v1/evaluation, $conns connections, durable audit on, a DPoP proof checked per decision"
wrk -t2 -c"$conns" -d"${duration}s" --latency -s decide.lua "http://$addr/access/v1/evaluation" | sed -n '1,20p'
kill "$server"; wait "$server" 2>/dev/null || true; server=""
records=$("$bin" --output json audit verify --data-dir data "${db[@]}" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["intact"], d; print(d["records"])')
start=$(date +%s.%N)
for _ in 1 2 3; do "$bin" audit verify --data-dir data "${db[@]}" > /dev/null; done
end=$(date +%s.%N)
python3 -c "import sys; r=$records; t=($end-$start)/3; print(f'== audit verify: {r} records in {t:.3f} s = {r/t:,.0f} records/s (mean of 3)')"
