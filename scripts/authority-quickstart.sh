#!/usr/bin/env bash
# The README's authority quick start: serve, mint tokens, request -> approve ->
# decide ALLOW -> post the business event -> decide DENY -> verify the audit.
# Prints each step and the fields of the real responses that do not change
# from run to run (ids and times do). A CLI test compares this output with the
# README block.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${MANDATE_BIN:-}" ]; then
  cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
  MANDATE_BIN="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
fi
bindir="$(mktemp -d)"; work="$(mktemp -d)"
ln -s "$MANDATE_BIN" "$bindir/mandate"
export PATH="$bindir:$PATH"
cd "$work"
cp "$root"/testdata/examples/{authority-request.json,facts-active.json,event-cancelled.json} .
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null; rm -rf "$work" "$bindir"; }
trap cleanup EXIT

field() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }
api() { # METHOD PATH TOKEN [BODY-FILE]
  local args=(-s -X "$1" "http://$addr$2" -H "Authorization: Bearer $3" -H 'content-type: application/json')
  [ $# -ge 4 ] && args+=(--data "@$4")
  curl "${args[@]}"
}

printf '[[event_source]]\nsub = "crm"\nfacts = ["procurement.contingency_program"]\n' > authority.toml
echo '$ cat authority.toml                     # the CRM may change the program'"'"'s facts, nothing else'
cat authority.toml
echo '$ mandate serve --config authority.toml --data-dir data --listen 127.0.0.1:0 &'
mandate serve --config authority.toml --data-dir data --listen 127.0.0.1:0 2> serve.log &
server=$!
for _ in $(seq 100); do grep -q listening serve.log 2>/dev/null && break; sleep 0.1; done
addr="$(sed -n 's|.*listening on http://\([^ ]*\).*|\1|p' serve.log)"
echo '$ mandate token --data-dir data --sub ... --role agent|principal|admin|enforcer|event_source'
agent=$(mandate token --data-dir data --sub agent-7 --role agent)
principal=$(mandate token --data-dir data --sub vp-supply-chain@example.com --role principal)
admin=$(mandate token --data-dir data --sub admin@example.com --role admin)
enforcer=$(mandate token --data-dir data --sub gateway-1 --role enforcer)
events=$(mandate token --data-dir data --sub crm --role event_source)

echo '$ mandate keygen --out agent.jwk > agent.pub.jwk   # the key the agent proves possession with'
mandate keygen --out agent.jwk > agent.pub.jwk
python3 -c 'import json; r=json.load(open("authority-request.json")); r["agent"]["cnf"]={"jwk": json.load(open("agent.pub.jwk"))}; json.dump(r, open("request.json","w"))'
echo '$ curl -X POST /v1/requests            # agent asks for the procurement mandate, binding that key'
r=$(api POST /v1/requests "$agent" request.json)
echo "$r" | field '"state: " + d["state"]'
rid=$(echo "$r" | field 'd["id"]')
echo '$ curl -X POST /v1/requests/$ID/approve # principal approves what was shown'
a=$(api POST "/v1/requests/$rid/approve" "$principal")
echo "$a" | field '"state: " + d["state"] + ", mandate signed: " + str(d["mandate"].count(".") == 2)'
# The enforcement point's question: the agent's mandate, and the DPoP proof
# the agent sent with its call (fresh for every call), for that call's method and URL.
decide_json() {
  mandate dpop --key agent.jwk --method POST --url https://vendor-portal.example.com/search > proof.jwt
  python3 -c 'import json,sys; a=json.loads(sys.argv[1]); json.dump({"subject":{"type":"agent","id":"urn:agent:procurement/vendor-sourcing@3.2","properties":{"mandate":a["mandate"]}},"action":{"name":"search"},"context":{"agent_instance":"inst-7f2a-b8c4","dpop":open("proof.jwt").read().strip(),"htm":"POST","htu":"https://vendor-portal.example.com/search"},"resource":{"type":"vendor_portal","id":"https://vendor-portal.example.com/search","properties":{"category":"logistics","region":"north-america","contract_template":"standard-logistics-v3","spend_tier":"pre-approved"}}}, open("decide.json","w"))' "$a"
}
echo '$ curl -X PUT /v1/facts                 # admin: the contingency program is active'
api PUT /v1/facts "$admin" facts-active.json | field '"facts version: " + str(d["version"])'
echo '$ curl -X POST /access/v1/evaluation    # enforcer asks before the agent searches (with its proof)'
decide_json
api POST /access/v1/evaluation "$enforcer" decide.json | field '(("ALLOW" if d["decision"] else "DENY") + " " + ", ".join(d["context"]["reasons"])).strip()'
exchange() { # the agent trades its mandate (and a proof) for an OAuth access token
  local p; p=$(mandate dpop --key agent.jwk --method POST --url "http://$addr/oauth/token")
  curl -s -X POST "http://$addr/oauth/token" -H "DPoP: $p" \
    --data-urlencode grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
    --data-urlencode subject_token_type=urn:ietf:params:oauth:token-type:jwt \
    --data-urlencode "subject_token=$(echo "$a" | field 'd["mandate"]')"
}
echo '$ curl -X POST /oauth/token             # agent: a short token for an OAuth API (RFC 8693, DPoP-bound)'
exchange | field '"token_type: " + d["token_type"] + ", expires in <= 300 s: " + str(0 < d["expires_in"] <= 300)'
echo '$ curl -X POST /v1/events               # the CRM reports the program was cancelled'
api POST /v1/events "$events" event-cancelled.json | field '"mandates ended: " + str(len(d["changed"]))'
echo '$ curl -X POST /access/v1/evaluation    # the same request, a moment later (a fresh proof)'
decide_json
api POST /access/v1/evaluation "$enforcer" decide.json | field '(("ALLOW" if d["decision"] else "DENY") + " " + ", ".join(d["context"]["reasons"])).strip()'
echo '$ curl -X POST /oauth/token             # and a token for the ended mission?'
exchange | field 'd["error"]'
kill "$server"; wait "$server" 2>/dev/null || true; server=""
echo '$ mandate audit verify --data-dir data'
mandate --output json audit verify --data-dir data | field '("INTACT" if d["intact"] else "BROKEN") + " " + str(d["records"]) + " records"'
echo '$ mandate audit query --data-dir data --mandate $MANDATE --after-end'
mid=$(echo "$a" | field 'd["mandate_id"]')
mandate --output json audit query --data-dir data --mandate "$mid" --after-end \
  | field '"ended by: " + d["ended_by"]["kind"] + " (" + d["ended_by"]["body"]["by"] + "); attempts after the end: " + str(len(d["after_end"])) + ", all " + ", ".join(sorted({r["body"]["decision"] for r in d["after_end"]}))'
