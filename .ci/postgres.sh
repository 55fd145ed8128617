#!/usr/bin/env bash
# Make PostgreSQL's server binaries (initdb, pg_ctl) available for the ledger tests.
# Idempotent and quiet: does nothing when initdb is already on PATH or in Debian's location.
# tests/conftest.py starts a throwaway server from these binaries; no service is started here.
set -euo pipefail

have_initdb() {
    command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_initdb; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
# Debian's package would start a cluster on install where a service manager runs; the tests
# start their own, so nothing depends on that one.
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if ! have_initdb; then
    echo "postgres.sh: installed postgresql but found no initdb" >&2
    exit 1
fi
