#!/usr/bin/env bash
# Install the wheel of dist/ (scripts/dist.sh) with its dependencies into
# a fresh virtualenv and run scripts/smoke_wheel.py with it from a
# temporary directory outside the checkout, against the private cluster
# (started when it is not running).  Nothing of the checkout is on the
# smoke script's path.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
PYTHON=${PYTHON:-python3}

wheels=(dist/*.whl)
[ -e "${wheels[0]}" ] || die "no wheel in dist/; run scripts/dist.sh first"
[ ${#wheels[@]} -eq 1 ] || die "more than one wheel in dist/"
tmp=$(mktemp -d /tmp/zopeless-smoke.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

say "installing ${wheels[0]} into a fresh virtualenv"
make_venv "$PYTHON" "$tmp/venv"
pip_install "$tmp/venv" "$PWD/${wheels[0]}" || die "pip install of the wheel failed"
server=$(bin/python -m canonical.testing.cluster env) || die "the cluster did not start"
eval "$server"   # PGHOST, PGPORT, PGUSER
cp scripts/smoke_wheel.py "$tmp/"
cd "$tmp"
# Nothing else: no PYTHONPATH, no LP_* or site settings from the caller.
env -u PYTHONPATH -u LP_DBNAME -u LP_DBHOST -u LP_DBUSER -u PGDATABASE \
    -u ZOPELESS_SITE_ZCML -u ZOPELESS_VAR \
    "$tmp/venv/bin/python" smoke_wheel.py
