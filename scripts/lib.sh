# Shell helpers of the scripts in this directory (sourced, not run).
# They expect to run from the checkout's root.

say() { echo "${0##*/}: $*"; }
die() { echo "${0##*/}: $*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

can_apt() { is_root && command -v apt-get >/dev/null 2>&1; }

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# make_venv PYTHON DIR: a fresh virtualenv.  Debian's own python3 lacks
# the venv module until python3-venv is installed; as root, install it.
make_venv() {
    local python=$1 dir=$2
    rm -rf "$dir"
    "$python" -m venv "$dir" >/dev/null 2>&1 && return 0
    rm -rf "$dir"
    if can_apt && [ "$(readlink -f "$(command -v "$python")")" = "$(readlink -f /usr/bin/python3)" ]; then
        say "installing python3-venv (apt-get install python3-venv)"
        apt_install python3-venv || die "apt-get install python3-venv failed"
        "$python" -m venv "$dir" || die "$python -m venv $dir failed"
    else
        die "$python -m venv failed; install Python's venv module (Debian: apt-get install python3-venv)"
    fi
}

# pip_install VENV ARGS...: pip install into VENV at the versions of
# constraints.txt (PIP_CONSTRAINT also pins what pip builds packages with).
pip_install() {
    local venv=$1
    shift
    PIP_CONSTRAINT="$PWD/constraints.txt" "$venv/bin/python" -m pip install \
        -q --disable-pip-version-check "$@"
}
