# Shared by the load scripts (sourced): the CPU time the servers spend on a
# run, read from /proc, so that a run reports CPU per request besides
# requests/s. On a shared 2-core machine requests/s moves with whatever else
# the host runs; the CPU a request costs moves far less.

# The clock ticks (utime + stime, every thread) spent so far by the given
# processes and their children (nginx's workers are its master's children).
server_ticks() {
  local p c total=0 t
  for p in "$@"; do
    for c in "$p" $(pgrep -P "$p" 2>/dev/null || true); do
      # Fields after the command name: state is the 1st, utime the 12th,
      # stime the 13th (proc(5)); the name may hold spaces, so cut at ") ".
      t=$(sed 's/.*) //' "/proc/$c/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
      total=$((total + ${t:-0}))
    done
  done
  echo "$total"
}

# Microseconds of server CPU per request: TICKS REQUESTS.
cpu_per_request() {
  python3 -c 'import sys; t, n, hz = map(float, sys.argv[1:]); print(f"{t * 1e6 / hz / n:.1f}" if n else "0")' \
    "$1" "$2" "$(getconf CLK_TCK)"
}
