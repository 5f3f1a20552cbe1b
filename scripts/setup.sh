#!/usr/bin/env bash
# Prepare a checkout: PostgreSQL server binaries, a virtualenv holding
# zc.buildout, then bin/python and bin/test from buildout.cfg.
# Safe to run again: it only does what is missing or out of date.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
BUILDOUT_PINS="zc.buildout==6.0.1 zc.recipe.egg==6.0.0 zc.recipe.testrunner==5.0"

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

has_server() {
    [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

# The same places canonical.database.cluster looks at.
find_pg_server() {
    local d
    if [ -n "${ZOPELESS_PG_BINDIR:-}" ]; then
        has_server "$ZOPELESS_PG_BINDIR"
        return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        [ -n "$d" ] && has_server "$d" && return 0
    fi
    if command -v initdb >/dev/null 2>&1; then
        d=$(dirname "$(readlink -f "$(command -v initdb)")")
        has_server "$d" && return 0
    fi
    for d in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin; do
        has_server "$d" && return 0
    done
    return 1
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. PostgreSQL server binaries.
if ! find_pg_server; then
    if [ -n "${ZOPELESS_PG_BINDIR:-}" ]; then
        die "ZOPELESS_PG_BINDIR=$ZOPELESS_PG_BINDIR has no initdb, pg_ctl and postgres"
    fi
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        die "PostgreSQL server binaries not found; install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql) and run this again"
    fi
    say "installing the PostgreSQL server (apt-get install postgresql)"
    # Only the binaries are used: the private cluster lives under var/.
    # The distribution's default cluster is not needed, so do not create it.
    conf=/etc/postgresql-common/createcluster.d/zopeless.conf
    if [ ! -e "$conf" ]; then
        mkdir -p "$(dirname "$conf")"
        echo "create_main_cluster = false" > "$conf"
    fi
    apt_install postgresql || die "apt-get install postgresql failed"
    find_pg_server || die "postgresql is installed but its server binaries were not found"
fi

# 1b. PgBouncer, which the high-availability tests run in front of standbys.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    if is_root && command -v apt-get >/dev/null 2>&1; then
        say "installing PgBouncer (apt-get install pgbouncer)"
        apt_install pgbouncer || die "apt-get install pgbouncer failed"
        # Only the binary is used; the package's own service is not wanted.
        if command -v systemctl >/dev/null 2>&1; then
            systemctl disable --now pgbouncer >/dev/null 2>&1 || true
        fi
    else
        say "PgBouncer not found: the tests that need it will fail; install it (Debian/Ubuntu: apt-get install pgbouncer)"
    fi
fi

# 2. A virtualenv with zc.buildout.
marker=.venv/.zopeless-buildout
if [ ! -x .venv/bin/buildout ] || [ "$(cat "$marker" 2>/dev/null)" != "$BUILDOUT_PINS" ]; then
    say "creating .venv with $BUILDOUT_PINS"
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        if is_root && command -v apt-get >/dev/null 2>&1 && \
                [ "$(readlink -f "$(command -v "$PYTHON")")" = "$(readlink -f /usr/bin/python3)" ]; then
            apt_install python3-venv || die "apt-get install python3-venv failed"
            "$PYTHON" -m venv .venv || die "$PYTHON -m venv failed"
        else
            die "$PYTHON -m venv failed; install Python's venv module (Debian: apt-get install python3-venv)"
        fi
    fi
    # shellcheck disable=SC2086
    .venv/bin/pip install -q --disable-pip-version-check $BUILDOUT_PINS \
        || die "pip install of $BUILDOUT_PINS failed"
    echo "$BUILDOUT_PINS" > "$marker"
fi

# 3. bin/python and bin/test (and whatever else buildout.cfg lists).
need_buildout=no
for script in bin/python bin/test; do
    [ -x "$script" ] || need_buildout=yes
done
if [ "$need_buildout" = no ]; then
    [ bin/test -nt setup.py ] && [ bin/test -nt buildout.cfg ] || need_buildout=yes
    # Scripts made by another interpreter (or in another checkout).
    head -n1 bin/test | grep -qF "$ROOT/.venv/" || need_buildout=yes
    if grep -q '^\[twistd\]' buildout.cfg && [ ! -x bin/twistd ]; then
        need_buildout=yes
    fi
fi
if [ "$need_buildout" = yes ]; then
    say "running buildout"
    .venv/bin/buildout -N -q buildout:show-picked-versions=false \
        || die "buildout failed (see the messages above)"
    touch bin/test bin/python
fi
