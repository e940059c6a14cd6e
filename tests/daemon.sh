# Sourced by the scripts that check the built daemon from outside (compliance.sh, openapi.sh):
# `start_daemon NAME SCOPES [CONFIG_EXTRA]` starts `$BIN serve` on a free loopback port with a
# throw-away SQLite database and MFA key in a scratch directory, and a token called NAME with
# SCOPES; it sets WORKDIR, BASE, TOKEN and DAEMON_LOG, and stops the daemon and removes the
# directory when the script exits. The sourcing script defines `die`, BIN, VENV (a virtualenv
# with Python) and HEALTH_TIMEOUT.

DAEMON_PID=""
WORKDIR=""
stop_daemon() {
  if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    kill "$DAEMON_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
  fi
  [[ -z "$WORKDIR" ]] || rm -rf "$WORKDIR"
}

start_daemon() {
  local name="$1" scopes="$2"
  WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/provisiond-$name.XXXXXX")"
  trap stop_daemon EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # The environment must not redirect the daemon elsewhere.
  while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(PROVISIOND_|RUST_LOG$)' || true)

  local port
  port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  BASE="http://127.0.0.1:$port"
  local config="$WORKDIR/provisiond.toml"
  DAEMON_LOG="$WORKDIR/provisiond.log"
  cat >"$config" <<CONFIG
[server]
listen = "127.0.0.1:$port"
[database]
url = "sqlite://$WORKDIR/provisiond.db"
[mfa]
key_file = "$WORKDIR/mfa.key"
[log]
level = "warn"
CONFIG

  local token_out
  token_out="$("$BIN" --config "$config" token create --name "$name" --scope "$scopes" 2>"$WORKDIR/token.err")" ||
    die "token creation failed: $(cat "$WORKDIR/token.err")"
  TOKEN="$(printf '%s\n' "$token_out" | tail -n 1 | tr -d '[:space:]')"
  [[ -n "$TOKEN" ]] || die "token creation printed no token"

  "$BIN" --config "$config" serve >"$DAEMON_LOG" 2>&1 &
  DAEMON_PID=$!

  local deadline=$((SECONDS + HEALTH_TIMEOUT))
  until curl -fsS -o /dev/null --max-time 2 "$BASE/healthz" 2>/dev/null; do
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
      cat "$DAEMON_LOG" >&2
      die "the daemon exited before answering /healthz (its log is above)"
    fi
    if ((SECONDS >= deadline)); then
      cat "$DAEMON_LOG" >&2
      die "GET $BASE/healthz did not succeed within ${HEALTH_TIMEOUT}s (the daemon's log is above)"
    fi
    sleep 0.2
  done
}
