#!/usr/bin/env bash
# Instructions per operation of the core paths, counted by callgrind: the
# same for the same binary and inputs whatever else the machine is doing, so
# a regression shows where criterion's timings on a shared machine cannot.
#   scripts/instructions.sh            # this tree
#   BASE=<commit> scripts/instructions.sh   # that commit and this tree, side by side
# Each path runs N times (and, where its set-up cannot be left out of the
# count, 0 times, subtracted). Valgrind's virtual CPU has neither AVX-512 nor
# SHA-NI: the counts are those of the AVX2 code paths. Hash maps are seeded
# at random, so two runs of one binary differ: by ~0.1% on the cold and
# attenuation paths, by up to ~1% on the warm ones (4,000 instructions).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
command -v valgrind > /dev/null || { echo "needs valgrind (Debian: apt-get install valgrind)" >&2; exit 2; }

build() { # $1: source tree, $2: target dir; the examples that tree has
  local examples=()
  for ex in profile_cold profile_below profile_attenuate profile_warm profile_pop; do
    [ -f "$1/crates/mandate-bench/examples/$ex.rs" ] && examples+=(--example "$ex")
  done
  CARGO_TARGET_DIR="$2" cargo build -q --release -p mandate-bench --manifest-path "$1/Cargo.toml" "${examples[@]}"
}
refs() { # the instruction count of one run
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
}
per_op() { # $1: examples dir, $2: N, $3: example, $4...: extra args
  local dir="$1" n="$2" ex="$3"; shift 3
  local with without
  with=$(refs "$dir/$ex" "$n" "$@"); without=$(refs "$dir/$ex" 0 "$@")
  echo $(( (with - without) / n ))
}
pop_op() { # the pop loop alone (its proofs are made outside the counted function)
  local dir="$1" n="$2" total
  [ -x "$dir/profile_pop" ] || { echo "-"; return; }
  total=$(valgrind --tool=callgrind --toggle-collect='profile_pop::measured' --callgrind-out-file=/dev/null \
    "$dir/profile_pop" "$n" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,)
  echo $(( total / n ))
}
measure() { # $1: examples dir; prints one count per line, in the order of `paths`
  local d="$1"
  per_op "$d" 200 profile_cold
  if [ -x "$d/profile_below" ]; then per_op "$d" 200 profile_below; else echo "-"; fi
  per_op "$d" 200 profile_attenuate
  per_op "$d" 200 profile_attenuate read
  per_op "$d" 20000 profile_warm
  per_op "$d" 20000 profile_warm presented
  pop_op "$d" 200
}
paths=(
  "cold: 3-hop chain from its wire string, verified and decided"
  "the same chain's new leaf, its first two hops verified before"
  "attenuate: derive, check, sign and encode a child, from the parent's string"
  "attenuate: the same from a parent read once"
  "warm: decide on a verified chain held"
  "warm: the presented string found in the cache, then decided"
  "a decision with its DPoP proof (chain cached, one verify_strict)"
)
head_target="${CARGO_TARGET_DIR:-$root/target}"
build "$root" "$head_target"
mapfile -t now < <(measure "$head_target/release/examples")
if [ -z "${BASE:-}" ]; then
  printf '| %s | %s |\n| --- | ---: |\n' "path (instructions per operation)" "$(git -C "$root" rev-parse --short HEAD)"
  for i in "${!paths[@]}"; do printf '| %s | %s |\n' "${paths[$i]}" "${now[$i]}"; done
  exit 0
fi
wt="$(mktemp -d)"; trap 'git -C "$root" worktree remove --force "$wt" 2>/dev/null || true' EXIT
git -C "$root" worktree add -q --detach "$wt" "$BASE"
build "$wt" "${BASE_TARGET:-/tmp/mandate-instructions-base}"
mapfile -t before < <(measure "${BASE_TARGET:-/tmp/mandate-instructions-base}/release/examples")
printf '| %s | %s | %s | %s |\n| --- | ---: | ---: | ---: |\n' "path (instructions per operation)" \
  "$(git -C "$root" rev-parse --short "$BASE")" "$(git -C "$root" rev-parse --short HEAD)" "change"
for i in "${!paths[@]}"; do
  b="${before[$i]}"; a="${now[$i]}"
  change="-"
  [ "$b" != "-" ] && [ "$a" != "-" ] && change=$(python3 -c "print(f'{($a - $b) / $b * 100:+.1f}%')")
  printf '| %s | %s | %s | %s |\n' "${paths[$i]}" "$b" "$a" "$change"
done
