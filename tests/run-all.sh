#!/usr/bin/env bash
# Runs every test of provisiond, from a fresh machine: installs what is missing, builds, runs the
# Rust suite (unit tests and integration tests against the real daemon) and then the public SCIM
# compliance checker against the built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use.
missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run-all: missing ${missing[*]}; install with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    echo "run-all: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "run-all: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

cargo build --locked --all-targets
cargo nextest run --locked --no-fail-fast
tests/compliance.sh target/debug/provisiond
