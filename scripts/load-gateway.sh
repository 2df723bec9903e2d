#!/usr/bin/env bash
# Gateway overhead: load against the upstream directly, through nginx
# proxy_pass, through the mandate gateway, and through nginx with the
# gateway's auth_request (deploy/nginx/mandate.conf). One run, same machine.
#   scripts/load-gateway.sh [DURATION=10] [CONNECTIONS=32]
# MANDATE_BIN=path runs that build instead of building this tree.
# ONLY=upstream,proxy,apart,gateway,auth picks the runs (all by default):
# "proxy" is nginx proxy_pass in the upstream's own nginx worker, "apart" the
# same proxy in an nginx of its own (as the gateway is). ROUNDS=3
# rounds take turns so that the machine's drift hits every target alike.
# Needs nginx and curl (Debian packages); the load comes from
# crates/mandate-loadgen, the same for every target.
# CALLGRIND=1: the gateway runs under valgrind's callgrind, only the gateway
# is loaded, and the run reports instructions and allocations per request
# (repeatable where req/s on a shared machine is not); one connection keeps
# every proof checked alone:  CALLGRIND=1 scripts/load-gateway.sh 15 1
# CALLGRIND_OUT=FILE keeps callgrind's output there (for callgrind_annotate).
# BEARER=1: the gateway runs with proof_of_possession = "bearer" and the load
# carries no DPoP proofs (development mode, never a deployment): what the
# gateway's HTTP path and decision cost against nginx without the one
# Ed25519 verification a request that proof of possession adds.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-10}"; conns="${2:-32}"
if [ -n "${MANDATE_BIN:-}" ]; then
  bin="$MANDATE_BIN"  # another build, for before/after runs
else
  cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
fi
# The load generator (crates/mandate-loadgen; see scripts/load-authority.sh).
cargo build -q --release -p mandate-loadgen --manifest-path "$root/Cargo.toml"
loadgen="${CARGO_TARGET_DIR:-$root/target}/release/mandate-loadgen"
. "$root/scripts/load-common.sh"
# The processes on a request's path (the proxies and the upstream): every
# server but the authority, which audits the gateway's decisions on its own
# cores in a deployment.
path_pids() { for p in "${pids[@]}"; do [ "$p" = "${authority:-}" ] || echo "$p"; done; }
work="$(mktemp -d)"; pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
U=$(port); P=$(port); Q=$(port); A=$(port); G=$(port)

# The upstream and the plain proxy: nginx.
mkdir -p nginx/tmp
cat > nginx/base.conf <<NGINX
worker_processes 1;
pid base.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path tmp; proxy_temp_path tmp;
  upstream resource { server 127.0.0.1:$U; keepalive 32; }
  server { listen 127.0.0.1:$U; location / { default_type application/json; return 200 '{"number":123,"state":"open"}'; } }
  server { listen 127.0.0.1:$P; location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://resource; } }
}
NGINX
nginx -p "$work/nginx" -c base.conf -g 'daemon off;' & pids+=($!)
# The same proxy in an nginx of its own, apart from the upstream, as the
# gateway is: in base.conf the proxy and the upstream share one worker, so
# nginx's hop to the upstream wakes no other process, where the gateway's
# must wake nginx's worker (and be woken by its answer).
cat > nginx/apart.conf <<NGINX
worker_processes 1;
pid apart.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path tmp; proxy_temp_path tmp;
  upstream resource { server 127.0.0.1:$U; keepalive 32; }
  server { listen 127.0.0.1:$Q; location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://resource; } }
}
NGINX
nginx -p "$work/nginx" -c apart.conf -g 'daemon off;' & pids+=($!)

# The authority, a mandate, and the gateway.
"$bin" serve --data-dir data --listen 127.0.0.1:0 2> serve.log & pids+=($!); authority=$!
for _ in $(seq 100); do grep -q listening serve.log 2>/dev/null && break; sleep 0.1; done
addr="$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' serve.log)"
tok() { "$bin" token --data-dir data --sub "$1" --role "$2" --ttl 7200; }
tok gateway-1 enforcer > enforcer.token
agent=$(tok agent-7 agent); principal=$(tok vp@acme.example principal)
# The agent's holder key: every request through the gateway carries a fresh
# DPoP proof by it (proofs are made ahead of each run, one per request).
"$bin" keygen --out holder.jwk > holder.pub.jwk
cat > req.json <<JSON
{"principal": "vp@acme.example", "agent": {"id": "urn:agent:code/pr-watcher@1.0", "instance": "inst-1", "cnf": {"jwk": $(cat holder.pub.jwk)}},
 "purpose": {"objective": "Watch PR #123", "business_context": "Load test"},
 "authorization_details": [{"type": "github_pull_request", "locations": ["https://api.github.com/repos/acme/app"],
   "resource": {"repo": "acme/app", "number": 123}, "actions": ["read"]}],
 "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z"},
 "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}}
JSON
rid=$(curl -s -X POST "http://$addr/v1/requests" -H "Authorization: Bearer $agent" --data @req.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
mandate=$(curl -s -X POST "http://$addr/v1/requests/$rid/approve" -H "Authorization: Bearer $principal" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mandate"])')
sed -e "s|127.0.0.1:8081|127.0.0.1:$G|; s|127.0.0.1:8080|$addr|; s|127.0.0.1:9000|127.0.0.1:$U|; s|delivery = \"push\".*|delivery = \"push\"|" \
  "$root/deploy/nginx/gateway.toml" > gateway.toml
[ -n "${BEARER:-}" ] && sed -i '/^location_base/a proof_of_possession = "bearer"' gateway.toml
under=(); [ -n "${CALLGRIND:-}" ] && under=(valgrind --tool=callgrind --callgrind-out-file="${CALLGRIND_OUT:-$work/callgrind.out}")
"${under[@]}" "$bin" gateway --config gateway.toml 2> gateway.log & gw=$!; pids+=($gw)
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$G/_mandate/healthz" | grep -q '"fresh":true' && break; sleep 0.1; done
sed -e "s|127.0.0.1:9000|127.0.0.1:$U|; s|127.0.0.1:8081|127.0.0.1:$G|; s|127.0.0.1:8088|127.0.0.1:$A|" "$root/deploy/nginx/mandate.conf" > nginx/auth.conf
nginx -p "$work/nginx" -c auth.conf -g 'daemon off;' & pids+=($!)
sleep 0.5
proof() { "$bin" dpop --key holder.jwk --method GET --url "$1/repos/acme/app/pulls/123" "${@:2}"; }
for url in "http://127.0.0.1:$G" "http://127.0.0.1:$A"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Mandate: $mandate" -H "Mandate-Agent-Instance: inst-1" -H "DPoP: $(proof "$url")" "$url/repos/acme/app/pulls/123")
  [ "$code" = 200 ] || { echo "setup failed: $url answered $code"; cat gateway.log; exit 1; }
done

if [ -n "${CALLGRIND:-}" ]; then
  lines=()
  if [ -z "${BEARER:-}" ]; then
    proof "http://127.0.0.1:$G" --count $((duration * 10000)) > proofs
    lines=(-H 'DPoP: @LINE@' --lines proofs)
  fi
  out=$("$loadgen" "http://127.0.0.1:$G/repos/acme/app/pulls/123" -c "$conns" -d "$duration" "${lines[@]}" \
    -H "Mandate: $mandate" -H "Mandate-Agent-Instance: inst-1" --expect '"state":"open"')
  echo "$out"
  kill "$gw"; wait "$gw" 2>/dev/null || true
  python3 "$root/scripts/callgrind-per-op.py" "${CALLGRIND_OUT:-$work/callgrind.out}" "$(echo "$out" | awk '/requests in/ {print $1}')" \
    "all threads=PROGRAM TOTALS" \
    "a request's handling (decision, upstream call; poll_msg)=<hyper::proto::h1::dispatch::Server<S,hyper::body::incoming::Incoming> as hyper::proto::h1::dispatch::Dispatch>::poll_msg [" \
    "  of which the proof's signature (strict Ed25519)=mandate_core::keys::VerifyingKey::verify [" \
    "shipping its decisions to the authority (send_loop)=mandate_enforce::shipper::send_loop ["
  exit 0
fi
decided=2  # the two set-up requests above
results="$work/results.csv"
run() { # NAME URL CONNECTIONS ROUND
  local out lines=()
  case "${BEARER:-}:$2" in :*":$G"|:*":$A")
    # A fresh proof per request: enough for the highest rate seen here.
    proof "$2" --count $((duration * ($3 > 1 ? 40000 : 10000))) > proofs
    lines=(-H 'DPoP: @LINE@' --lines proofs) ;;
  esac
  local before; before=$(server_ticks $(path_pids))
  out=$("$loadgen" "$2/repos/acme/app/pulls/123" -c "$3" -d "$duration" "${lines[@]}" \
    -H "Mandate: $mandate" -H "Mandate-Agent-Instance: inst-1" --expect '"state":"open"') \
    || { echo "FAIL: $1 ($3 connections, round $4)"; cat gateway.log | tail -5; exit 1; }
  # The CPU of the request's path over the run (nginx, the gateway), per
  # request; neither the load generator's nor the authority's.
  local cpu; cpu=$(cpu_per_request $(($(server_ticks $(path_pids)) - before)) "$(echo "$out" | awk '/requests in/ {print $1}')")
  case "$2" in *":$G"|*":$A") decided=$((decided + $(echo "$out" | awk '/requests in/ {print $1}')))
    # How the gateway checked the proofs so far (batched or one at a time).
    echo "  $1, $3 connection(s), round $4: proof signatures so far $(curl -s "http://127.0.0.1:$G/_mandate/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["proof_signatures"])')" ;;
  esac
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  [ -z "$non2xx" ] || { echo "FAIL: $1 answered $non2xx non-2xx"; exit 1; }
  echo "$1,$3,$4,$(echo "$out" | awk '/Requests\/sec/ {print $2}'),$(echo "$out" | awk '$1=="50%" {print $2}'),$(echo "$out" | awk '$1=="99%" {print $2}'),$cpu" >> "$results"
}
only="${ONLY:-upstream,proxy,apart,gateway,auth}"
rounds="${ROUNDS:-3}"
echo "== ${duration}s a run, $rounds rounds taking turns; mandate-loadgen at $conns connections and at 1"
for round in $(seq "$rounds"); do
  for c in "$conns" 1; do
    case ",$only," in *,upstream,*) run "upstream directly" "http://127.0.0.1:$U" "$c" "$round";; esac
    case ",$only," in *,proxy,*) run "nginx proxy_pass" "http://127.0.0.1:$P" "$c" "$round";; esac
    case ",$only," in *,apart,*) run "nginx proxy_pass apart" "http://127.0.0.1:$Q" "$c" "$round";; esac
    case ",$only," in *,gateway,*) run "mandate gateway" "http://127.0.0.1:$G" "$c" "$round";; esac
    case ",$only," in *,auth,*) run "nginx + mandate auth_request" "http://127.0.0.1:$A" "$c" "$round";; esac
  done
done
python3 "$root/scripts/load-summary.py" "$results" "nginx proxy_pass,nginx proxy_pass apart" "upstream directly"

# Every decision the gateway made (through it or for nginx) must be in the
# authority's audit log: the figures above include shipping them.
sleep 1.5
audited=$("$bin" audit export --data-dir data | python3 -c '
import json, sys
print(sum(len(json.loads(l)["body"]["records"]) for l in sys.stdin if "\"decisions\"" in l and json.loads(l)["kind"] == "decisions"))')
echo "decisions in the audit log: $audited (the load generator completed $decided through the gateway and auth_request)"
if grep -q "spooled" gateway.log; then echo "WARNING: the gateway spooled decisions (authority unreachable or refusing)"; grep -m3 spooled gateway.log; fi
[ "$audited" -ge "$decided" ] || { echo "FAIL: decisions missing from the audit log"; exit 1; }

