#!/usr/bin/env bash
# Decisions per second through the HTTP API with durable audit on, then the
# audit log's verify rate. Bounded: DURATION seconds of load on loopback.
#   scripts/load-authority.sh [DURATION=10] [CONNECTIONS=32]
# With MANDATE_DATABASE=postgres://… the authority runs on that (empty)
# PostgreSQL database instead of the embedded file; with REPLICAS=N too, N
# replicas share it (keys copied from the first), and N load generators load
# one replica each with CONNECTIONS/N connections: the sum is the decisions/s
# of the cluster.
# Needs curl; the load comes from crates/mandate-loadgen (built here).
# CALLGRIND=1: the authority runs under valgrind's callgrind instead, and
# the run reports instructions and allocations per decision (the request's
# handling, its proof, the store's writer): figures a busy machine does not
# move, where decisions/s here move by a third between runs. With one
# connection every proof is checked alone on the worker and the counts
# repeat:  CALLGRIND=1 scripts/load-authority.sh 15 1
# CALLGRIND_OUT=FILE keeps callgrind's output there (for callgrind_annotate).
# MANDATES=N: the decisions are spread over N mandates (granted before the
# run, taken in turn), as a real authority's are over its agents' missions;
# the default is one mandate for every decision.
# HOPS=K: each mandate decided on is the leaf of a K-hop delegation chain
# below a granted one, derived with `mandate attenuate` and registered with
# the authority (POST /v1/mandates/{parent}/children), as a sub-agent's is;
# OFFLINE=1 leaves the hops unregistered (derived offline, as the authority
# first sees them in a decision). Every hop binds the same holder key.
# HOLDERS=H (with MANDATES a multiple of H, no HOPS): mandate j binds holder
# key j mod H, and each decision's proof is signed by its mandate's key, so
# concurrent proofs come from H agents (the default, one, is one agent's
# concurrent requests: its proofs share one key in a signature batch).
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
cargo build -q --release -p mandate-loadgen --manifest-path "$root/Cargo.toml"
loadgen="${CARGO_TARGET_DIR:-$root/target}/release/mandate-loadgen"
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
  under=(); [ -n "${CALLGRIND:-}" ] && under=(valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="${CALLGRIND_OUT:-$work/callgrind.out}")
  "${under[@]}" "$bin" serve --data-dir "$d" --listen 127.0.0.1:0 --issuer https://mandate.test "${db[@]}" 2> "serve$r.log" &
  servers+=($!)
  for _ in $(seq 600); do grep -q listening "serve$r.log" 2>/dev/null && break; sleep 0.1; done
  addrs+=("$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "serve$r.log")")
done
addr="${addrs[0]}"
tok() { "$bin" token --data-dir data --sub "$1" --role "$2" --ttl 3600; }
agent=$(tok agent-7 agent); principal=$(tok vp-supply-chain@example.com principal)
admin=$(tok admin@example.com admin); enforcer=$(tok gateway-1 enforcer)
api() { curl -s -X "$1" "http://$addr$2" -H "Authorization: Bearer $3" -H 'content-type: application/json' ${4:+--data "@$4"}; }
# The agent binds its holder key; every decision carries a fresh DPoP proof
# by it (made ahead of the run, one per request).
"$bin" keygen --out holder.jwk > holder.pub.jwk
hops="${HOPS:-0}"
holders="${HOLDERS:-1}"
if [ "$holders" -gt 1 ]; then
  if [ "$hops" -gt 0 ] || [ $(( ${MANDATES:-1} % holders )) != 0 ]; then
    echo "HOLDERS needs MANDATES a multiple of it, and no HOPS" >&2; exit 2
  fi
  cp holder.jwk holder0.jwk; cp holder.pub.jwk holder0.pub.jwk
  for h in $(seq 1 $((holders - 1))); do "$bin" keygen --out "holder$h.jwk" > "holder$h.pub.jwk"; done
fi
# N proofs for the URL, line i by the key of holder i mod H (of request i's
# mandate, when MANDATES is a multiple of H).
proofs() {
  if [ "$holders" -gt 1 ]; then
    for h in $(seq 0 $((holders - 1))); do
      "$bin" dpop --key "holder$h.jwk" --method POST --url https://pep.example/search --count $(( ($1 + holders - 1) / holders )) > "p$h.part"
    done
    python3 - "$holders" "$1" <<'PY'
import sys
h, n = int(sys.argv[1]), int(sys.argv[2])
parts = [open(f"p{k}.part").read().split() for k in range(h)]
print("\n".join(parts[i % h][i // h] for i in range(n)))
PY
  else
    "$bin" dpop --key holder.jwk --method POST --url https://pep.example/search --count "$1"
  fi
}
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["agent"]["cnf"]={"jwk": json.load(open("holder.pub.jwk"))}; r["delegation"]["max_additional_hops"]=max(1, int(sys.argv[2])); json.dump(r, open("request.json","w"))' "$root/testdata/examples/authority-request.json" "$hops"
rid=$(api POST /v1/requests "$agent" request.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
api POST "/v1/requests/$rid/approve" "$principal" > approved.json
api PUT /v1/facts "$admin" "$root/testdata/examples/facts-active.json" > /dev/null
mandates="${MANDATES:-1}"
if [ "$mandates" -gt 1 ]; then
  # The other N-1 mandates, granted over one keep-alive connection each way.
  python3 - "$addr" "$agent" "$principal" "$mandates" "$holders" <<'PY'
import http.client, json, sys
addr, agent, principal, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = http.client.HTTPConnection(addr)
def call(path, token, body):
    c.request("POST", path, body=json.dumps(body), headers={"Authorization": f"Bearer {token}", "content-type": "application/json"})
    r = c.getresponse(); data = json.loads(r.read())
    assert r.status < 300, (path, r.status, data)
    return data
request = json.load(open("request.json"))
holders = int(sys.argv[5])
out = [json.load(open("approved.json"))["mandate"]]
for j in range(1, n):
    if holders > 1:
        request["agent"]["cnf"] = {"jwk": json.load(open(f"holder{j % holders}.pub.jwk"))}
    rid = call("/v1/requests", agent, request)["id"]
    out.append(call(f"/v1/requests/{rid}/approve", principal, {})["mandate"])
open("mandates.txt", "w").write("\n".join(out) + "\n")
PY
fi
if [ "$hops" -gt 0 ]; then
  # K children below each granted mandate, each a day shorter than its parent.
  [ -f mandates.txt ] || python3 -c 'import json; print(json.load(open("approved.json"))["mandate"])' > mandates.txt
  python3 - "$bin" "$addr" "$agent" "$hops" "${OFFLINE:-}" <<'PY'
import base64, http.client, json, subprocess, sys
bin_, addr, agent, hops, offline = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
request = json.load(open("request.json"))
c = http.client.HTTPConnection(addr)
out = []
for chain in open("mandates.txt").read().split():
    for k in range(1, hops + 1):
        payload = chain.split("~")[-1].split(".")[1]
        parent_id = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["mandate_id"]
        claims = {"mandate_id": f"{parent_id}.h{k}", "agent": {"id": request["agent"]["id"], "instance": request["agent"]["instance"]},
                  "authorization_details": request["authorization_details"],
                  "lifecycle": {"hard_expiry": f"2099-10-{15 - k:02d}T17:00:00Z"},
                  "delegation": {"permitted": k < hops, "max_additional_hops": hops - k,
                                 "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}}
        json.dump(claims, open("claims.json", "w"))
        child = subprocess.run([bin_, "attenuate", "--parent", chain, "--holder-key", "holder.jwk",
                                "--claims", "claims.json", "--child-holder", "holder.pub.jwk"],
                               capture_output=True, text=True)
        assert child.returncode == 0, child.stderr
        child = child.stdout.strip()
        if not offline:
            c.request("POST", f"/v1/mandates/{parent_id}/children", body=json.dumps({"mandate": child}),
                      headers={"Authorization": f"Bearer {agent}", "content-type": "application/json"})
            r = c.getresponse(); answer = r.read()
            assert r.status == 200, (r.status, answer[:300])
        chain = child
    out.append(chain)
open("mandates.txt", "w").write("\n".join(out) + "\n")
PY
  echo "== each mandate decided on is the leaf of a $hops-hop chain$([ -n "${OFFLINE:-}" ] && echo ', derived offline (unregistered)' || echo ', every hop registered')"
fi
python3 - <<'PY'
import json
import os
a = json.load(open("approved.json"))
mandate = "@CYCLE@" if os.path.exists("mandates.txt") else a["mandate"]
body = json.dumps({"subject": {"type": "agent", "id": "urn:agent:procurement/vendor-sourcing@3.2", "properties": {"mandate": mandate}},
  "context": {"agent_instance": "inst-7f2a-b8c4", "htm": "POST", "htu": "https://pep.example/search", "dpop": "@LINE@"},
  "action": {"name": "search"}, "resource": {"type": "vendor_portal", "id": "https://vendor-portal.example.com/search",
  "properties": {"category": "logistics", "region": "north-america", "contract_template": "standard-logistics-v3", "spend_tier": "pre-approved"}}})
open("decide.json", "w").write(body)
PY
per=$((conns / replicas)); [ "$per" -ge 2 ] || per=2
# The load generator (crates/mandate-loadgen): every request formatted from
# decide.json with a proof of its own, all connections started together
# after every input is read, nothing completed outside the timed window
# counted. It needs about 12 us of CPU per request here (wrk with a Lua
# request() needed ~37; BENCHMARKS.md, issue 15 fourth round).
for r in $(seq "$replicas"); do
  proofs $((duration * 40000 / replicas)) > "proofs$r"
done
if [ -f mandates.txt ]; then
  # Each mandate decided once before the load, so the load measures an
  # authority that has seen its agents' mandates (as a running one has),
  # not N first verifications.
  proofs "$mandates" > warm-proofs
  for a in "${addrs[@]}"; do
    python3 - "$a" "$enforcer" <<'PY'
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1])
body = open("decide.json").read()
for m, p in zip(open("mandates.txt").read().split(), open("warm-proofs").read().split()):
    c.request("POST", "/access/v1/evaluation", body=body.replace("@CYCLE@", m).replace("@LINE@", p),
              headers={"Authorization": f"Bearer {sys.argv[2]}", "content-type": "application/json"})
    r = c.getresponse(); answer = r.read()
    assert r.status == 200 and b'"decision":true' in answer, (r.status, answer[:300])
PY
    proofs "$mandates" > warm-proofs
  done
fi
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
echo "== ${duration}s of POST /access/v1/evaluation, $conns connections over $replicas replica(s), $mandates mandate(s) bound to $holders holder key(s), durable audit on, a DPoP proof checked per decision"
# PERF_OUT=FILE: a CPU profile of the (first) authority during the load
# (perf record, call graphs), for `perf report -i FILE`.
if [ -n "${PERF_OUT:-}" ]; then
  # PERF_CALL_GRAPH=dwarf for call chains through code built without frame pointers.
  perf record -F 499 --call-graph "${PERF_CALL_GRAPH:-fp}" -o "$PERF_OUT" -p "${servers[0]}" -- sleep "$duration" > /dev/null 2>&1 &
fi
cycle=(); [ -f mandates.txt ] && cycle=(--cycle mandates.txt)
load() { # ADDR CONNECTIONS PROOFS
  "$loadgen" "http://$1/access/v1/evaluation" -c "$2" -d "$duration" -m POST \
    -H 'Content-Type: application/json' -H "Authorization: Bearer $enforcer" \
    --body-file decide.json --lines "$3" "${cycle[@]}" --expect '"decision":true'
}
# CPU time of a process so far, in seconds (utime + stime from /proc).
cpu_secs() { sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($12 + $13) / hz}'; }
# Bytes a process has sent to storage so far (WAL, SQLite's checkpoints, the
# signed checkpoint file; 0 where /proc does not say).
written() { sed -n 's/^write_bytes: //p' "/proc/$1/io" 2>/dev/null || echo 0; }
# How the authority has checked proof signatures so far (its /metrics):
# "at-once thread-alone batched batches rechecked".
sigs() {
  curl -s "http://$1/metrics" | python3 -c '
import re, sys
t = sys.stdin.read()
def n(p):
    m = re.search(p + r" (\d+)", t)
    return int(m.group(1)) if m else 0
print(n(r"checked=\"at_once\"\}"), n(r"checked=\"thread_alone\"\}"), n(r"checked=\"batch\"\}"),
      n("mandate_proof_signature_batches_total"), n("mandate_proof_signatures_rechecked_total"))'
}
if [ "$replicas" = 1 ]; then
  # Under callgrind, only the load is counted: the counters start from zero
  # here, after the grants and facts the set-up made.
  [ -n "${CALLGRIND:-}" ] && callgrind_control -d "${servers[0]}" > /dev/null
  sbefore=$(sigs "$addr")
  before=$(cpu_secs "${servers[0]}"); wbefore=$(written "${servers[0]}")
  out=$(load "$addr" "$conns" proofs1) || { echo "$out"; exit 1; }
  after=$(cpu_secs "${servers[0]}"); wafter=$(written "${servers[0]}")
  safter=$(sigs "$addr")
  echo "$out"
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  python3 -c "b, a, n, c = $before, $after, $n, $(nproc); print(f'== the authority used {a - b:.2f} s of CPU (all its threads): {(a - b) * 1e6 / max(n, 1):.0f} us a decision; {c} cores cannot pass {c / max(a - b, 1e-9) * n:,.0f} decisions/s at that cost')"
  python3 -c "w, n = ${wafter:-0} - ${wbefore:-0}, $n; print(f'== it wrote {w / 1e6:.1f} MB to storage: {w / max(n, 1):,.0f} bytes a decision')"
  python3 -c "
b, a = '$sbefore'.split(), '$safter'.split()
o, t, s, k, r = (int(y) - int(x) for x, y in zip(b, a)) if len(a) == len(b) == 5 else (0,) * 5
print(f'== proof signatures: {o:,} checked at once, {t:,} alone on the batcher thread, {s:,} in {k:,} batches (mean {s / max(k, 1):.1f}), {r:,} checked again'
      if o + t + s else '== proof signatures: not counted by this build (no mandate_proof_signatures_total)')"
else
  loads=()
  for r in $(seq "$replicas"); do
    load "${addrs[$((r - 1))]}" "$per" "proofs$r" > "load$r.out" &
    loads+=($!)
  done
  wait "${loads[@]}"
  for r in $(seq "$replicas"); do echo "-- replica $r"; sed -n '1,20p' "load$r.out"; done
  python3 - "$replicas" <<'PY'
import re, sys
total = 0.0
for r in range(1, int(sys.argv[1]) + 1):
    m = re.search(r"Requests/sec:\s+([\d.]+)", open(f"load{r}.out").read())
    total += float(m.group(1)) if m else 0.0
print(f"== cluster: {total:,.0f} decisions/s over {sys.argv[1]} replicas (sum of the load generators)")
PY
fi
for p in "${servers[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done; servers=()
if [ -n "${CALLGRIND:-}" ]; then
  python3 "$root/scripts/callgrind-per-op.py" "${CALLGRIND_OUT:-$work/callgrind.out}" "$(echo "$out" | awk '/requests in/ {print $1}')" \
    "all threads=PROGRAM TOTALS" \
    "a request's handling (hyper's poll_msg, the handler in it)=<hyper::proto::h1::dispatch::Server<S,hyper::body::incoming::Incoming> as hyper::proto::h1::dispatch::Dispatch>::poll_msg [" \
    "  of which the proof's signature (strict Ed25519)=mandate_core::keys::VerifyingKey::verify [" \
    "the store's writer thread (SQLite, the audit chain)=mandate_store::writer_loop [" \
    "  of which the signed checkpoint (fewer a decision at a higher rate)=mandate_store::audit::write_checkpoint ["
  exit 0
fi
records=$("$bin" --output json audit verify --data-dir data "${db[@]}" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["intact"], d; print(d["records"])')
start=$(date +%s.%N)
for _ in 1 2 3; do "$bin" audit verify --data-dir data "${db[@]}" > /dev/null; done
end=$(date +%s.%N)
python3 -c "import sys; r=$records; t=($end-$start)/3; print(f'== audit verify: {r} records in {t:.3f} s = {r/t:,.0f} records/s (mean of 3)')"
