#!/usr/bin/env bash
# Property-based check of the /api/v1 OpenAPI document against the running daemon, with the
# public tool schemathesis: every answer must be no server error, with a documented status,
# content type and body shape (checks not_a_server_error, status_code_conformance,
# content_type_conformance, response_schema_conformance).
#
# Usage: tests/openapi.sh [PATH_TO_BINARY]
#   PATH_TO_BINARY defaults to target/debug/provisiond (relative to the repo root).
#
# It creates (or reuses) a virtualenv at .venv/openapi with a pinned schemathesis, starts the
# daemon on a free loopback port with a throw-away SQLite database, a token with the mfa and
# admin scopes and a few users, and runs schemathesis with a bounded number of examples per
# operation (OPENAPI_MAX_EXAMPLES, default 50: under a minute here). The last line is always
# `openapi: N passed, M failed` (N operations).
set -euo pipefail

SCHEMATHESIS_PIN="schemathesis==4.32.5"
MAX_EXAMPLES="${OPENAPI_MAX_EXAMPLES:-50}"
HEALTH_TIMEOUT=30

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

die() {
  echo "openapi: $*" >&2
  echo "openapi: 0 passed, 1 failed"
  exit 1
}

BIN="${1:-target/debug/provisiond}"
[[ -x "$BIN" ]] || die "daemon binary '$BIN' not found or not executable (run: cargo build)"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

# --- virtualenv -------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
VENV="$REPO_ROOT/.venv/openapi"
STAMP="$VENV/.openapi-pin"
if ! { [[ -x "$VENV/bin/schemathesis" && -f "$STAMP" && "$(cat "$STAMP")" == "$SCHEMATHESIS_PIN" ]] &&
  "$VENV/bin/python" -c 'import schemathesis' >/dev/null 2>&1; }; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (apt-get install -y python3 python3-venv)"
  "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    die "the Python venv module is missing; fix it with: apt-get update && apt-get install -y python3-venv"
  echo "openapi: creating virtualenv $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv' failed"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SCHEMATHESIS_PIN" ||
    die "pip install $SCHEMATHESIS_PIN failed"
  printf '%s' "$SCHEMATHESIS_PIN" >"$STAMP"
fi

# --- daemon -----------------------------------------------------------------
# shellcheck source=tests/daemon.sh
source "$REPO_ROOT/tests/daemon.sh"
start_daemon openapi scim,mfa,admin

# A few users, so that ids find something besides 404s: schemathesis draws most `{id}`s from
# them. The token goes through files (curl's -H @file, the schemathesis config), never a
# command line others could read.
umask 077
printf 'Authorization: Bearer %s\n' "$TOKEN" >"$WORKDIR/auth.header"
IDS=()
for name in ada bob carol; do
  created="$(curl -fsS -H @"$WORKDIR/auth.header" -H 'Content-Type: application/scim+json' \
    -d "{\"schemas\":[\"urn:ietf:params:scim:schemas:core:2.0:User\"],\"userName\":\"$name\"}" "$BASE/scim/v2/Users")" ||
    die "could not create the test users"
  IDS+=("\"$("$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["id"])' <<<"$created")\"")
done
# bob has an enrolment in progress (confirm and verify reach their checks).
curl -fsS -o /dev/null -X POST -H @"$WORKDIR/auth.header" "$BASE/api/v1/users/${IDS[1]//\"/}/mfa/totp" ||
  die "could not start an enrolment"
cat >"$WORKDIR/schemathesis.toml" <<EOF
[headers]
Authorization = "Bearer $TOKEN"

[dictionaries.user-ids]
values = [$(IFS=,; echo "${IDS[*]}")]

[parameters]
"path.id" = { dictionary = "user-ids", probability = 0.8 }
EOF

# --- checker ----------------------------------------------------------------
OUT="$WORKDIR/schemathesis.out"
set +e
# From the scratch directory: schemathesis keeps a cache (.schemathesis/) where it runs.
(cd "$WORKDIR" && NO_COLOR=1 TERM=dumb "$VENV/bin/schemathesis" --config-file "$WORKDIR/schemathesis.toml" run "$BASE/api/v1/openapi.json" \
  --url "$BASE" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --mode all --phases examples,coverage,fuzzing \
  --max-examples "$MAX_EXAMPLES" --request-timeout 10 \
  --seed 11 --workers 1) >"$OUT" 2>&1
RC=$?
set -e
cat "$OUT"
# Server-side errors the checks might not see (a panic in a worker, an error logged by the daemon).
if grep -E ' ERROR provisiond|panicked' "$DAEMON_LOG" >&2; then
  echo "openapi: the daemon logged the errors above" >&2
  RC=1
fi
operations="$(grep -oE 'Tested: [0-9]+' "$OUT" | grep -oE '[0-9]+' | head -1 || true)"
if ((RC == 0)); then
  echo "openapi: ${operations:-0} passed, 0 failed"
  exit 0
fi
echo "openapi: 0 passed, ${operations:-1} failed"
exit 1
