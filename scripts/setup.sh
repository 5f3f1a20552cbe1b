#!/usr/bin/env bash
# Prepare a checkout: PostgreSQL server binaries, a virtualenv holding
# zc.buildout, the version pins for buildout, then bin/python, bin/test and
# the other scripts of buildout.cfg.
# Safe to run again: each step only does what is missing or out of date.
# To add a step, write a step_* function and list it in STEPS at the end.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
# The set-up's own tools, installed into .venv at the versions of
# constraints.txt (scripts/pins.py pins them: keep its TOOLS in step).
VENV_TOOLS="zc.buildout zc.recipe.egg zc.recipe.testrunner packaging"
# What buildout.cfg makes.
BUILDOUT_SCRIPTS="python test twistd bench chaos sphinx-build"

# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# 1. PostgreSQL server binaries.
has_server() {
    [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

# The same places canonical.testing.cluster looks at.
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

step_pg_server() {
    find_pg_server && return 0
    if [ -n "${ZOPELESS_PG_BINDIR:-}" ]; then
        die "ZOPELESS_PG_BINDIR=$ZOPELESS_PG_BINDIR has no initdb, pg_ctl and postgres"
    fi
    can_apt || die "PostgreSQL server binaries not found; install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql) and run this again"
    say "installing the PostgreSQL server (apt-get install postgresql)"
    # Only the binaries are used: the private cluster lives under var/.
    # The distribution's default cluster is not needed, so do not create it.
    local conf=/etc/postgresql-common/createcluster.d/zopeless.conf
    if [ ! -e "$conf" ]; then
        mkdir -p "$(dirname "$conf")"
        echo "create_main_cluster = false" > "$conf"
    fi
    apt_install postgresql || die "apt-get install postgresql failed"
    find_pg_server || die "postgresql is installed but its server binaries were not found"
}

# 1b. PgBouncer, which the high-availability tests run in front of standbys.
step_pgbouncer() {
    if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then
        return 0
    fi
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        die "PgBouncer not found; install it (Debian/Ubuntu: apt-get install pgbouncer) and run this again"
    fi
    say "installing PgBouncer (apt-get install pgbouncer)"
    apt_install pgbouncer || die "apt-get install pgbouncer failed"
    # Only the binary is used; the package's own service is not wanted.
    if command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now pgbouncer >/dev/null 2>&1 || true
    fi
}

# 1c. Patroni, etcd and HAProxy, which the Patroni tests, soak and benchmarks
# run as users' clusters do (canonical.testing.cluster.patroni starts them).
has_patroni_kit() {
    command -v patroni >/dev/null 2>&1 && command -v patronictl >/dev/null 2>&1 \
        && { command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ]; } \
        && { command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; }
}

# The packages' postinst scripts start their services (etcd on 2379 with its
# data in /var/lib/etcd, HAProxy on the stock configuration, Patroni without
# one): a policy-rc.d answering 101 tells invoke-rc.d not to, where there is
# none already; systemd units are disabled and stopped afterwards.
step_patroni() {
    has_patroni_kit && return 0
    if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
        die "Patroni, etcd or HAProxy not found; install them (Debian 12: apt-get install patroni etcd-server etcd-client haproxy) and run this again"
    fi
    say "installing Patroni, etcd and HAProxy (apt-get install patroni etcd-server etcd-client haproxy)"
    local policy=/usr/sbin/policy-rc.d ours=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        ours=1
    fi
    local rc=0
    apt_install patroni etcd-server etcd-client haproxy || rc=$?
    [ -n "$ours" ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install patroni etcd-server etcd-client haproxy failed"
    local service
    for service in etcd patroni haproxy; do
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$service" >/dev/null 2>&1 || true
        elif [ -x "/etc/init.d/$service" ]; then
            "/etc/init.d/$service" stop >/dev/null 2>&1 || true
            update-rc.d "$service" disable >/dev/null 2>&1 || true
        fi
    done
    has_patroni_kit || die "patroni, etcd-server and haproxy are installed but patroni, etcd or haproxy was not found"
}

# 2. A virtualenv with zc.buildout, at the pinned versions.
step_venv() {
    local marker=.venv/.zopeless-tools stamp
    stamp="$VENV_TOOLS $(sha1sum constraints.txt | cut -d' ' -f1)"
    if [ -x .venv/bin/buildout ] && [ "$(cat "$marker" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    say "creating .venv with $VENV_TOOLS"
    rm -rf .venv
    make_venv "$PYTHON" .venv
    # shellcheck disable=SC2086
    pip_install .venv $VENV_TOOLS || die "pip install of $VENV_TOOLS failed"
    echo "$stamp" > "$marker"
}

# 3. buildout's [versions]: the pins of constraints.txt for this Python.
step_versions() {
    mkdir -p var
    if [ ! -e var/versions.cfg ] || [ constraints.txt -nt var/versions.cfg ] \
            || [ .venv/.zopeless-tools -nt var/versions.cfg ]; then
        .venv/bin/python scripts/pins.py buildout var/versions.cfg \
            || die "could not write var/versions.cfg from constraints.txt"
    fi
}

# 4. bin/python and bin/test (and whatever else buildout.cfg lists).
buildout_is_current() {
    local script input
    for script in $BUILDOUT_SCRIPTS; do
        [ -x "bin/$script" ] || return 1
    done
    for input in setup.py buildout.cfg var/versions.cfg src/canonical/lp/version.py; do
        [ bin/test -nt "$input" ] || return 1
    done
    # Scripts made by another interpreter (or in another checkout).
    head -n1 bin/test | grep -qF "$ROOT/.venv/" || return 1
}

step_buildout() {
    buildout_is_current && return 0
    say "running buildout"
    # PIP_CONSTRAINT pins what buildout's pip builds with (setuptools).
    PIP_CONSTRAINT="$ROOT/constraints.txt" \
        .venv/bin/buildout -N -q buildout:show-picked-versions=false \
        || die "buildout failed (see the messages above)"
    touch bin/test bin/python
}

STEPS="step_pg_server step_pgbouncer step_patroni step_venv step_versions step_buildout"
for step in $STEPS; do
    "$step"
done
