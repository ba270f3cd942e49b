#!/usr/bin/env bash
# Install (if needed) and start a local PostgreSQL for the Delivery Service tests, and print
# the URL of a fresh test database. Debian packages; loopback only.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | grep -q "^${version} main"; then
    pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >&2 2>&1 || true
for _ in $(seq 1 30); do
    if su postgres -c "pg_isready -q"; then break; fi
    sleep 1
done
su postgres -c "psql -q -c \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlspy') THEN CREATE ROLE mlspy LOGIN SUPERUSER PASSWORD 'mlspy'; END IF; END \\\$\\\$;\"" >&2
su postgres -c "dropdb --if-exists mlspy_test" >&2 || true
su postgres -c "createdb -O mlspy mlspy_test" >&2
echo "postgresql://mlspy:mlspy@127.0.0.1:5432/mlspy_test"
