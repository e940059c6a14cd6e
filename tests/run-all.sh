#!/usr/bin/env bash
# Runs every test of provisiond, from a fresh machine: installs what is missing (sqlite3, slapd,
# ldap-utils, PostgreSQL server binaries, openssl, systemd for systemd-analyze, chromium and
# chromium-driver for the console's real-browser test, python3-venv and aiosmtpd in .venv/smtp
# for the email tests), checks the
# formatting and clippy's lints (warnings are errors), builds, runs
# the Rust suite (unit tests, and the integration tests against the real daemon and a real slapd
# the tests start) on SQLite, runs the integration tests again on PostgreSQL (each test starts
# its own server), and then the public SCIM compliance checker and schemathesis (against the
# /api/v1 OpenAPI document) against the built binary, and builds, installs and purges the Debian
# package (tests/package.sh: lintian and cargo-deb are installed there when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use.
missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
# A real OpenLDAP server and its command-line tools for the LDAP sync tests.
[ -x /usr/sbin/slapd ] && [ -x /usr/sbin/slapadd ] || missing+=(slapd)
command -v ldapmodify >/dev/null || missing+=(ldap-utils)
# PostgreSQL server binaries (the tests run initdb and postgres themselves) and openssl (a
# certificate for the TLS test).
ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || [ -n "${PG_BINDIR:-}" ] || missing+=(postgresql)
command -v openssl >/dev/null || missing+=(openssl)
# systemd-analyze checks the shipped unit.
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
# A real browser (headless) and its WebDriver server for the console's browser test.
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
# Python's venv module, for the email tests' SMTP server (aiosmtpd, below) and the OpenAPI check.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run-all: missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "run-all: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The package starts a system slapd (with a default database): the tests start their own.
    # The same goes for PostgreSQL's default cluster.
    if command -v service >/dev/null; then
        service slapd stop >/dev/null 2>&1 || true
        service postgresql stop >/dev/null 2>&1 || true
    fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "run-all: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

# Python packages the tests run, each pinned in a virtualenv of its own under .venv, made again
# when its pin changes: pinned_venv DIR PIN MODULE.
pinned_venv() {
    local dir=$1 pin=$2 module=$3
    if [ -f "$dir/.pin" ] && [ "$(cat "$dir/.pin")" = "$pin" ] && "$dir/bin/python" -c "import $module" >/dev/null 2>&1; then
        return
    fi
    echo "run-all: creating $dir with $pin"
    rm -rf "$dir"
    mkdir -p .venv
    python3 -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$pin"
    printf '%s' "$pin" >"$dir/.pin"
}
# A real SMTP server for the email tests (tests/api/smtp.rs starts tests/smtp_sink.py with it).
pinned_venv .venv/smtp "aiosmtpd==1.4.6" aiosmtpd
# An independent verifier of our security event tokens (tests/api/ssf.rs runs
# tests/verify_set.py with it).
pinned_venv .venv/signals "jwcrypto==1.6.1" jwcrypto
# An independent verifier of our webhook signatures (tests/api/webhooks.rs runs
# tests/verify_webhook.py with it).
pinned_venv .venv/webhooks "standardwebhooks==1.1.0" standardwebhooks

failed=0
# The code as written: formatted (rustfmt.toml), and free of clippy warnings.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "run-all: installing rustfmt and clippy"
    rustup component add rustfmt clippy
fi
echo "run-all: cargo fmt --check and cargo clippy"
cargo fmt --check || failed=1
cargo clippy --locked --all-targets -- -D warnings || failed=1
cargo build --locked --all-targets
echo "run-all: the whole suite on SQLite"
cargo nextest run --locked --no-fail-fast || failed=1
echo "run-all: the integration tests on PostgreSQL"
TEST_BACKEND=postgres cargo nextest run --locked --no-fail-fast -E 'binary(api)' || failed=1
tests/compliance.sh target/debug/provisiond || failed=1
tests/openapi.sh target/debug/provisiond || failed=1
# The Debian package: built from the debug build, lintian, dpkg -i, looked at, removed, purged.
tests/package.sh || failed=1
exit $failed
