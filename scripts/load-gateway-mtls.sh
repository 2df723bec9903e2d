#!/usr/bin/env bash
# The gateway over TLS against nginx over TLS, one run, same machine: what
# possession proven once per connection (a certificate-bound mandate, RFC
# 8705) costs against a DPoP proof on every request.
#   scripts/load-gateway-mtls.sh [DURATION=10] [CONNECTIONS=32]
# Targets, each over TLS 1.3 with keep-alive (every handshake before the
# clock starts), taking turns for ROUNDS (default 3) rounds:
#   nginx proxy_pass         nginx terminating TLS (asking for a client
#                            certificate, as the gateway does) in front of
#                            an nginx upstream (in the same nginx worker)
#   nginx proxy_pass apart   the same, in an nginx of its own, apart from the
#                            upstream's, as the gateway is
#   gateway mTLS-bound       the mandate gateway, same upstream, a
#                            certificate-bound mandate: no proof per request
#   gateway DPoP             the same gateway, a key-bound mandate: a fresh
#                            DPoP proof per request, as scripts/load-gateway.sh
# MANDATE_BIN=path runs that build instead of building this tree. Needs
# nginx, openssl and curl (Debian packages).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-10}"; conns="${2:-32}"; rounds="${ROUNDS:-3}"
if [ -n "${MANDATE_BIN:-}" ]; then
  bin="$MANDATE_BIN"
else
  cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
  bin="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
fi
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
U=$(port); P=$(port); Q=$(port); G=$(port)

# A private CA and the servers' certificate (nginx and the gateway serve the
# same one, an ECDSA P-256 key); the agent's self-signed client certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=load CA" \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext \
  -out server.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=pr-watcher" \
  -keyout agent.key -out agent.pem 2>/dev/null
# RFC 8705 §3.1: base64url of the SHA-256 of the certificate's DER.
x5t=$(openssl x509 -in agent.pem -outform DER | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\n')

mkdir -p nginx/tmp
cat > nginx/tls.conf <<NGINX
worker_processes 1;
pid tls.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path tmp; proxy_temp_path tmp;
  upstream resource { server 127.0.0.1:$U; keepalive 32; }
  server { listen 127.0.0.1:$U; location / { default_type application/json; return 200 '{"number":123,"state":"open"}'; } }
  server {
    listen 127.0.0.1:$P ssl;
    ssl_certificate $work/server.pem; ssl_certificate_key $work/server.key;
    ssl_protocols TLSv1.3;
    ssl_verify_client optional_no_ca;
    keepalive_requests 1000000;
    location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://resource; }
  }
}
NGINX
nginx -p "$work/nginx" -c tls.conf -g 'daemon off;' & pids+=($!)
# The same TLS proxy apart from the upstream (see scripts/load-gateway.sh).
cat > nginx/apart.conf <<NGINX
worker_processes 1;
pid apart.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path tmp; proxy_temp_path tmp;
  upstream resource { server 127.0.0.1:$U; keepalive 32; }
  server {
    listen 127.0.0.1:$Q ssl;
    ssl_certificate $work/server.pem; ssl_certificate_key $work/server.key;
    ssl_protocols TLSv1.3;
    ssl_verify_client optional_no_ca;
    keepalive_requests 1000000;
    location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://resource; }
  }
}
NGINX
nginx -p "$work/nginx" -c apart.conf -g 'daemon off;' & pids+=($!)

"$bin" serve --data-dir data --listen 127.0.0.1:0 --outbound-ca "$work/ca.pem" 2> serve.log & pids+=($!); authority=$!
for _ in $(seq 100); do grep -q listening serve.log 2>/dev/null && break; sleep 0.1; done
addr="$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' serve.log)"
tok() { "$bin" token --data-dir data --sub "$1" --role "$2" --ttl 7200; }
tok gateway-1 enforcer > enforcer.token
agent=$(tok agent-7 agent); principal=$(tok vp@acme.example principal)
"$bin" keygen --out holder.jwk > holder.pub.jwk
grant() { # CNF-JSON -> mandate
  cat > req.json <<JSON
{"principal": "vp@acme.example", "agent": {"id": "urn:agent:code/pr-watcher@1.0", "instance": "inst-1", "cnf": $1},
 "purpose": {"objective": "Watch PR #123", "business_context": "Load test"},
 "authorization_details": [{"type": "github_pull_request", "locations": ["https://api.github.com/repos/acme/app"],
   "resource": {"repo": "acme/app", "number": 123}, "actions": ["read"]}],
 "lifecycle": {"hard_expiry": "2099-01-01T00:00:00Z"},
 "delegation": {"permitted": false, "max_additional_hops": 0, "attenuation": "strict_subset_of_parent", "cascade_revocation": "immediate"}}
JSON
  local rid
  rid=$(curl -s -X POST "http://$addr/v1/requests" -H "Authorization: Bearer $agent" --data @req.json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -s -X POST "http://$addr/v1/requests/$rid/approve" -H "Authorization: Bearer $principal" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mandate"])'
}
bound=$(grant "{\"jwk\": $(cat holder.pub.jwk), \"x5t#S256\": \"$x5t\"}")
keyed=$(grant "{\"jwk\": $(cat holder.pub.jwk)}")
sed -e "s|127.0.0.1:8081|127.0.0.1:$G|; s|127.0.0.1:8080|$addr|; s|127.0.0.1:9000|127.0.0.1:$U|; s|delivery = \"push\".*|delivery = \"push\"|" \
  "$root/deploy/nginx/gateway.toml" > gateway.toml
sed -i "/^location_base/a tls_cert_file = \"$work/server.pem\"\ntls_key_file = \"$work/server.key\"\nclient_certificates = \"self_signed\"\npublic_url = \"https://127.0.0.1:$G\"\npush_url = \"https://127.0.0.1:$G/_mandate/ssf\"" gateway.toml
"$bin" gateway --config gateway.toml 2> gateway.log & pids+=($!)
for _ in $(seq 600); do curl -sf --cacert ca.pem "https://127.0.0.1:$G/_mandate/healthz" | grep -q '"fresh":true' && break; sleep 0.1; done
url="https://127.0.0.1:$G/repos/acme/app/pulls/123"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem --cert agent.pem --key agent.key \
  -H "Mandate: $bound" -H "Mandate-Agent-Instance: inst-1" "$url")
[ "$code" = 200 ] || { echo "setup failed: the certificate-bound mandate answered $code"; tail gateway.log; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem -H "Mandate: $bound" -H "Mandate-Agent-Instance: inst-1" "$url")
[ "$code" = 403 ] || { echo "setup failed: without its certificate the bound mandate answered $code"; exit 1; }

results="$work/results.csv"
run() { # NAME PORT CONNECTIONS ROUND [loadgen args...]
  local out before cpu; before=$(server_ticks $(path_pids))
  out=$("$loadgen" "https://127.0.0.1:$2/repos/acme/app/pulls/123" --cacert ca.pem -c "$3" -d "$duration" "${@:5}" \
    -H "Mandate-Agent-Instance: inst-1" --expect '"state":"open"') \
    || { echo "FAIL: $1 ($3 connections, round $4)"; tail -5 gateway.log; exit 1; }
  cpu=$(cpu_per_request $(($(server_ticks $(path_pids)) - before)) "$(echo "$out" | awk '/requests in/ {print $1}')")
  echo "$1,$3,$4,$(echo "$out" | awk '/Requests\/sec/ {print $2}'),$(echo "$out" | awk '$1=="50%" {print $2}'),$(echo "$out" | awk '$1=="99%" {print $2}'),$cpu" >> "$results"
}
echo "== ${duration}s a run, $rounds rounds taking turns, TLS 1.3 everywhere; mandate-loadgen at $conns connections and at 1"
for round in $(seq "$rounds"); do
  for c in "$conns" 1; do
    run "nginx proxy_pass (TLS)" "$P" "$c" "$round" --cert agent.pem --key agent.key -H "Mandate: $bound"
    run "nginx proxy_pass apart (TLS)" "$Q" "$c" "$round" --cert agent.pem --key agent.key -H "Mandate: $bound"
    run "gateway mTLS-bound" "$G" "$c" "$round" --cert agent.pem --key agent.key -H "Mandate: $bound"
    "$bin" dpop --key holder.jwk --method GET --url "$url" --count $((duration * ($c > 1 ? 40000 : 10000))) > proofs
    run "gateway DPoP" "$G" "$c" "$round" -H "Mandate: $keyed" -H 'DPoP: @LINE@' --lines proofs
  done
done
echo "gateway proof signatures: $(curl -s --cacert ca.pem "https://127.0.0.1:$G/_mandate/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["proof_signatures"])')"
python3 "$root/scripts/load-summary.py" "$results" "nginx proxy_pass (TLS),nginx proxy_pass apart (TLS)"
