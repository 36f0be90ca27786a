# Sourced first by the bench scripts: $work, a scratch directory (readable
# by nginx's workers) removed on exit, and $pids, the processes a script
# starts, stopped on exit.
work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
