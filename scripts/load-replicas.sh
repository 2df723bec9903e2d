#!/usr/bin/env bash
# Revocation visibility across authority replicas on one PostgreSQL: N
# mandates are granted, each revoked at replica 1 and polled at replicas 2 and
# 3 (keep-alive connections, as fast as they answer) until they hold it
# revoked; the time from replica 1's answer to the other replica's memory
# saying so, p50/p99/max. Bounded: N revocations on loopback.
#   scripts/load-replicas.sh [N=200]
# Needs PostgreSQL (Debian: postgresql; scripts/pg-cluster installs it as root).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
n="${1:-200}"
cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
bin="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
work="$(mktemp -d /tmp/mandate-load-replicas.XXXXXX)"; chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "$root/scripts/pg-cluster" stop "$work/pg" || true
  rm -rf "$work"
}
trap cleanup EXIT
db="$("$root/scripts/pg-cluster" start "$work/pg")"
cd "$work"
start_replica() {
  local name=$1
  mkdir -p "$name"
  [ "$name" = r1 ] || cp r1/authority.jwk r1/local-issuer.jwk "$name/"
  "$bin" serve --data-dir "$name" --listen 127.0.0.1:0 --database "$db" --issuer https://mandate.test \
    > /dev/null 2> "$name.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q listening "$name.log" 2>/dev/null && break; sleep 0.1; done
}
addr() { sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' "$1.log"; }
start_replica r1; start_replica r2; start_replica r3
a1=$(addr r1); a2=$(addr r2); a3=$(addr r3)
tok() { "$bin" token --data-dir r1 --sub "$1" --role "$2" --ttl 3600; }
export AGENT=$(tok ci-agent agent) PRINCIPAL=$(tok lead@acme.example principal) ADMIN=$(tok admin@acme.example admin)
python3 - "$a1" "$a2" "$a3" "$n" <<'PY'
import http.client, json, os, sys, time
a1, a2, a3, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def conn(a):
    h, p = a.rsplit(":", 1)
    return http.client.HTTPConnection(h, int(p))
c1, c2, c3 = conn(a1), conn(a2), conn(a3)
def call(c, method, path, token, body=None):
    c.request(method, path, body=None if body is None else json.dumps(body),
              headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse()
    return r.status, json.loads(r.read() or b"null")
req = {"principal": "lead@acme.example",
       "agent": {"id": "ci-agent", "instance": "run-1", "cnf": {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}},
       "purpose": {"objective": "load", "business_context": "load"},
       "authorization_details": [{"type": "ci_logs", "locations": ["https://ci.example.com/logs"], "actions": ["read"]}],
       "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z", "terminal_events": []},
       "delegation": {"permitted": False, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}}
ids = []
for i in range(n):
    st, r = call(c1, "POST", "/v1/requests", os.environ["AGENT"], req); assert st == 201, r
    st, a = call(c1, "POST", f"/v1/requests/{r['id']}/approve", os.environ["PRINCIPAL"]); assert st == 200, a
    ids.append(a["mandate_id"])
def state(c, mid):
    st, m = call(c, "GET", f"/v1/mandates/{mid}", os.environ["ADMIN"])
    return m.get("state") if st == 200 else None
for mid in ids[-1:]:
    while state(c3, mid) != "active": time.sleep(0.001)
lat = []
for i, mid in enumerate(ids):
    other = c2 if i % 2 == 0 else c3
    st, _ = call(c1, "POST", f"/v1/mandates/{mid}/revoke", os.environ["PRINCIPAL"], {"reason": "load"})
    acked = time.perf_counter(); assert st == 200
    while state(other, mid) != "revoked":
        pass
    lat.append((time.perf_counter() - acked) * 1000)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
print(f"== revocation acknowledged at replica 1, held revoked at replica 2 or 3: n={len(lat)} "
      f"p50 {pct(50):.1f} ms, p99 {pct(99):.1f} ms, max {lat[-1]:.1f} ms")
PY
