# Sourced by the set-up scripts: run a step with its output in the log, one line on the terminal.
#   step "what it does" command args...
# prints "==> what it does ... ok (12 s)"; on failure the last 30 lines of the log and its path.
: "${ZENNAS_SETUP_LOG:=runs/setup.log}"
step() {
  local what=$1; shift
  local t0=$SECONDS
  printf '==> %s ... ' "$what"
  printf '\n### %s\n$ %s\n' "$what" "$*" >> "$ZENNAS_SETUP_LOG"
  if "$@" >> "$ZENNAS_SETUP_LOG" 2>&1; then
    echo "ok ($(( SECONDS - t0 )) s)"
  else
    local rc=$?
    echo "FAILED (exit $rc)"
    echo "---- last lines of $ZENNAS_SETUP_LOG ----" >&2
    tail -n 30 "$ZENNAS_SETUP_LOG" >&2
    echo "---- the full log is $ZENNAS_SETUP_LOG ----" >&2
    return "$rc"
  fi
}
