#!/usr/bin/env bash
# Run the test suite on each supported Python, or on those named:
#
#     scripts/matrix.sh            # every version of setup.py's PYTHONS
#     scripts/matrix.sh 3.9 3.13   # some; extra zope.testrunner options
#                                  # go in TESTRUNNER_ARGS
#
# Each version gets a virtualenv under var/matrix/<version> holding the
# library in development mode with its test extra, at the versions of
# constraints.txt for that Python (on the oldest Python, the lowest
# versions setup.py allows), and, as bin/test has, the checkout's root on
# sys.path.  The runs go one after the other and share the private cluster
# under var/.  A summary line per version ends the output; the exit status
# is non-zero when a run failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROOT=$PWD

versions=${*:-$(python3 scripts/pythons.py)}
summary=()
failed=0

prepare() {
    local version=$1 python=$2 venv=$3 stamp
    stamp="$(cat constraints.txt setup.py src/canonical/lp/version.py | sha1sum | cut -d' ' -f1) $python"
    [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$stamp" ] && return 0
    say "Python $version: creating $venv"
    make_venv "$python" "$venv"
    pip_install "$venv" -e ".[test]" || die "Python $version: pip install failed"
    local site
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$ROOT" > "$site/zopeless-checkout.pth"
    echo "$stamp" > "$venv/.stamp"
}

for version in $versions; do
    python=$(python3 scripts/pythons.py find "$version") || exit 1
    venv=var/matrix/$version
    prepare "$version" "$python" "$venv"
    say "Python $version: running the suite ($("$venv/bin/python" -V 2>&1))"
    log=$venv/test.log
    start=$SECONDS
    status=0
    # shellcheck disable=SC2086
    (cd "$venv" && bin/python -m zope.testrunner --test-path "$ROOT/src" \
        --path "$ROOT/tests" -v ${TESTRUNNER_ARGS:-}) 2>&1 | tee "$log" \
        || status=$?
    total=$(grep -E '^(Total: |  Ran )' "$log" | tail -n1 | sed 's/^ *//')
    summary+=("Python $version: ${total:-no result line} (exit $status, $((SECONDS - start)) s)")
    [ "$status" -eq 0 ] || failed=1
done

echo
for line in "${summary[@]}"; do
    say "$line"
done
exit "$failed"
