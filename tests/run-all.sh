#!/usr/bin/env bash
# Runs every test of provisiond, from a fresh machine: installs what is missing (sqlite3, slapd,
# ldap-utils, systemd for systemd-analyze), builds, runs the Rust suite (unit tests and integration tests against the real
# daemon and a real slapd the tests start) and then the public SCIM compliance checker against
# the built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use.
missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
# A real OpenLDAP server and its command-line tools for the LDAP sync tests.
[ -x /usr/sbin/slapd ] && [ -x /usr/sbin/slapadd ] || missing+=(slapd)
command -v ldapmodify >/dev/null || missing+=(ldap-utils)
# systemd-analyze checks the shipped unit.
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run-all: missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "run-all: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # The package starts a system slapd (with a default database): the tests start their own.
    if command -v service >/dev/null; then service slapd stop >/dev/null 2>&1 || true; fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "run-all: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

cargo build --locked --all-targets
cargo nextest run --locked --no-fail-fast
tests/compliance.sh target/debug/provisiond
