#!/usr/bin/env bash
# The README's quick start: keygen -> issue -> attenuate -> verify -> evaluate,
# ALLOW then DENY. Its output is the README's quick-start block; the CLI tests
# run this script and fail when the two differ.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${MANDATE_BIN:-}" ]; then
  cargo build -q --release -p mandate-cli --manifest-path "$root/Cargo.toml"
  MANDATE_BIN="${CARGO_TARGET_DIR:-$root/target}/release/mandate"
fi
bindir="$(mktemp -d)"
work="$(mktemp -d)"
trap 'rm -rf "$work" "$bindir"' EXIT
ln -s "$MANDATE_BIN" "$bindir/mandate"
export PATH="$bindir:$PATH"
cp -r "$root/testdata/examples" "$root/testdata/procurement-mandate.json" "$work/"
cd "$work"

# Prints a command, runs it, shows its output and any non-zero exit code.
run() {
  echo "\$ $*"
  local rc=0
  "$@" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || echo "(exit $rc)"
}
# Same, for a command whose stdout goes to a file.
run_to() {
  local out="$1"; shift
  echo "\$ $* > $out"
  "$@" > "$out"
}

run_to authority.pub.jwk mandate keygen --out authority.jwk
run_to agent.pub.jwk mandate keygen --out agent.jwk
run_to search-agent.pub.jwk mandate keygen --out search-agent.jwk
run_to jwks.json mandate jwks authority.jwk
run_to root.jws mandate issue --key authority.jwk --holder agent.pub.jwk --claims procurement-mandate.json
run mandate verify --jwks jwks.json @root.jws --at 2025-10-02T09:00:00Z
run_to child.jws mandate attenuate --parent @root.jws --holder-key agent.jwk \
  --child-holder search-agent.pub.jwk --claims examples/child-search-only.json --at 2025-10-02T08:00:00Z
run mandate attenuate --parent @root.jws --holder-key agent.jwk \
  --claims examples/child-widened.json --at 2025-10-02T08:00:00Z
run mandate evaluate --jwks jwks.json --mandate @child.jws --request examples/request-search.json \
  --state examples/state-active.json --at 2025-10-02T09:00:00Z
proof() { run_to "$1" mandate dpop --key search-agent.jwk --method POST \
  --url https://vendor-portal.example.com/search --at "$2"; }
proof proof.jwt 2025-10-02T09:00:00Z
run mandate evaluate --jwks jwks.json --mandate @child.jws --request examples/request-search.json \
  --state examples/state-active.json --dpop @proof.jwt --at 2025-10-02T09:00:00Z
proof later.jwt 2025-10-09T09:00:00Z
run mandate evaluate --jwks jwks.json --mandate @child.jws --request examples/request-search.json \
  --state examples/state-active.json --dpop @later.jwt --at 2025-10-09T09:00:00Z
proof again.jwt 2025-10-02T09:00:00Z
run mandate evaluate --jwks jwks.json --mandate @child.jws --request examples/request-search.json \
  --state examples/state-cancelled.json --dpop @again.jwt --at 2025-10-02T09:00:00Z
