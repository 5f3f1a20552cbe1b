#!/usr/bin/env bash
# Build the sdist and the wheel into dist/ with the standard tools
# ("python -m build": the sdist first, then the wheel from the sdist), and
# check them: "twine check", then scripts/check_dist.py (the files of both
# against those git tracks).  build and twine live in var/dist-tools, at
# the versions of constraints.txt, as does the setuptools that builds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
PYTHON=${PYTHON:-python3}
TOOLS=var/dist-tools

stamp="$(sha1sum constraints.txt | cut -d' ' -f1) $("$PYTHON" -V 2>&1)"
if [ "$(cat "$TOOLS/.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "creating $TOOLS with build and twine"
    make_venv "$PYTHON" "$TOOLS"
    pip_install "$TOOLS" build twine || die "pip install of build and twine failed"
    echo "$stamp" > "$TOOLS/.stamp"
fi

rm -rf dist
PIP_CONSTRAINT="$PWD/constraints.txt" "$TOOLS/bin/python" -m build -q --outdir dist . \
    || die "python -m build failed"
"$TOOLS/bin/twine" check --strict dist/* || die "twine check failed"
"$TOOLS/bin/python" scripts/check_dist.py dist
