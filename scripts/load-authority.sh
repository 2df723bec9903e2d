#!/usr/bin/env bash
# Decisions per second through the HTTP API with durable audit on, then the
# audit log's verify rate. Bounded: DURATION seconds of load on loopback.
#   scripts/load-authority.sh [DURATION=10] [CONNECTIONS=32]
# With MANDATE_DATABASE=postgres://… the authority runs on that (empty)
# PostgreSQL database instead of the embedded file; with REPLICAS=N too, N
# replicas share it (keys copied from the first), and N wrk processes load
# one replica each with CONNECTIONS/N connections: the sum is the decisions/s
# of the cluster.
# Needs wrk (Debian: apt-get install wrk) and curl.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-10}"; conns="${2:-32}"
# MANDATE_BIN: another build to measure (e.g. the previous commit's, for a
# same-hour comparison); else this tree's release build.
if [ -n "${MANDATE_BIN:-}" ]; then
  bin="$MANDATE_BIN"
else
  cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
fi
replicas="${REPLICAS:-1}"
if [ "$replicas" -gt 1 ] && [ -z "${MANDATE_DATABASE:-}" ]; then
  echo "REPLICAS needs MANDATE_DATABASE (replicas share one PostgreSQL)" >&2; exit 2
fi
work="$(mktemp -d)"; servers=()
cleanup() { for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
db=(); [ -n "${MANDATE_DATABASE:-}" ] && db=(--database "$MANDATE_DATABASE")
addrs=()
for r in $(seq "$replicas"); do
  d=data; [ "$r" = 1 ] || { d="data$r"; mkdir -p "$d"; cp data/authority.jwk data/local-issuer.jwk "$d/"; }
  "$bin" serve --data-dir "$d" --listen 127.0.0.1:0 --issuer https://mandate.test "${db[@]}" 2> "serve$r.log" &
  servers+=($!)
  for _ in $(seq 100); do grep -q listening "serve$r.log" 2>/dev/null && break; sleep 0.1; done
  addrs+=("$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "serve$r.log")")
done
addr="${addrs[0]}"
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
  '-- Every request is formatted before the run, so the load generator spends\n'
  '-- its CPU on sending, not on building bodies (it shares the cores).\n'
  'local reqs, i = {}, 0\n'
  f'local head, tail = {json.dumps(head)}, {json.dumps(tail)}\n'
  'function init(args) for line in io.lines(os.getenv("PROOFS") .. "." .. id) do reqs[#reqs + 1] = wrk.format(nil, nil, nil, head .. line .. tail) end end\n'
  'function request() i = i + 1; return reqs[i] end\n'
  'response = function(status, headers, body)\n'
  '  if status ~= 200 or not string.find(body, \'"decision":true\', 1, true) then wrk.thread:stop() end\n'
  'end\n')
PY
per=$((conns / replicas)); [ "$per" -ge 2 ] || per=2
for r in $(seq "$replicas"); do for t in 1 2; do
  "$bin" dpop --key holder.jwk --method POST --url https://pep.example/search --count $((duration * 25000 / replicas)) > "proofs$r.$t"
done; done
# Every decision is durable before it is answered, so a connection waits for
# at least one fsync per decision: with C connections in flight the rate
# cannot pass about C / (1.5 x fsync) (a decision arriving during one group's
# fsync waits for the rest of it and all of the next). The disk's fdatasync
# time, measured here in the data directory, says where that bound is.
if [ -z "${MANDATE_DATABASE:-}" ]; then
  python3 - "$conns" <<'PY'
import os, sys, time
fd = os.open("fsync-probe", os.O_WRONLY | os.O_CREAT, 0o600)
ts = []
for _ in range(100):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter(); os.fdatasync(fd); ts.append(time.perf_counter() - t)
os.close(fd); os.unlink("fsync-probe")
ts.sort(); p50 = ts[50]
c = int(sys.argv[1])
print(f"== this disk: fdatasync p50 {p50 * 1e3:.2f} ms, p99 {ts[98] * 1e3:.2f} ms; "
      f"{c} connections each waiting for a commit: at most ~{c / (1.5 * p50):,.0f} decisions/s")
PY
fi
echo "== ${duration}s of POST /access/v1/evaluation, $conns connections over $replicas replica(s), durable audit on, a DPoP proof checked per decision"
# PERF_OUT=FILE: a CPU profile of the (first) authority during the load
# (perf record, call graphs), for `perf report -i FILE`.
if [ -n "${PERF_OUT:-}" ]; then
  # PERF_CALL_GRAPH=dwarf for call chains through code built without frame pointers.
  perf record -F 499 --call-graph "${PERF_CALL_GRAPH:-fp}" -o "$PERF_OUT" -p "${servers[0]}" -- sleep "$duration" > /dev/null 2>&1 &
fi
if [ "$replicas" = 1 ]; then
  PROOFS=proofs1 wrk -t2 -c"$conns" -d"${duration}s" --latency -s decide.lua "http://$addr/access/v1/evaluation" | sed -n '1,20p'
else
  wrks=()
  for r in $(seq "$replicas"); do
    PROOFS="proofs$r" wrk -t2 -c"$per" -d"${duration}s" --latency -s decide.lua "http://${addrs[$((r - 1))]}/access/v1/evaluation" > "wrk$r.out" &
    wrks+=($!)
  done
  wait "${wrks[@]}"
  for r in $(seq "$replicas"); do echo "-- replica $r"; sed -n '1,20p' "wrk$r.out"; done
  python3 - "$replicas" <<'PY'
import re, sys
total = 0.0
for r in range(1, int(sys.argv[1]) + 1):
    m = re.search(r"Requests/sec:\s+([\d.]+)", open(f"wrk{r}.out").read())
    total += float(m.group(1)) if m else 0.0
print(f"== cluster: {total:,.0f} decisions/s over {sys.argv[1]} replicas (sum of the wrk runs)")
PY
fi
for p in "${servers[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done; servers=()
records=$("$bin" --output json audit verify --data-dir data "${db[@]}" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["intact"], d; print(d["records"])')
start=$(date +%s.%N)
for _ in 1 2 3; do "$bin" audit verify --data-dir data "${db[@]}" > /dev/null; done
end=$(date +%s.%N)
python3 -c "import sys; r=$records; t=($end-$start)/3; print(f'== audit verify: {r} records in {t:.3f} s = {r/t:,.0f} records/s (mean of 3)')"
