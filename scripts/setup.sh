#!/usr/bin/env bash
# One-command setup for a Debian 12 machine (root): Debian packages, the
# virtualenv, then the requested job.  Idempotent: a second run only checks.
#
#   scripts/setup.sh demo    set up, then run the main job (the XDP demo)
#   scripts/setup.sh test    set up, then run ruff and the test suite
#   scripts/setup.sh env     set up only
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY=/usr/bin/python3   # Debian's interpreter: python3-bpfcc is built for it

DEBIAN_PACKAGES=(
    python3 python3-venv python3-bpfcc
    openvpn iperf3 iproute2 iputils-ping ethtool kmod
    linux-headers-amd64 strace tcpdump
    debootstrap   # the tests' openvpn 2.7 peer comes from a Debian sid root
    gcc python3-dev libssl-dev   # the native engine (native/*.c, built by pip install)
)

die() { echo "setup: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (namespaces, BPF and package installs need it)"
[ -r /etc/debian_version ] || die "this script supports Debian 12 only"

install_debian_packages() {
    local missing=()
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Make exactly Debian's bcc package importable in the venv (not all of dist-packages).
link_bcc() {
    local site bcc_dir
    bcc_dir=$("$PY" -c 'import bcc, os; print(os.path.dirname(bcc.__file__))' 2>/dev/null) \
        || die "python3-bpfcc is installed but 'import bcc' fails for $PY"
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    ln -sfn "$bcc_dir" "$site/bcc"
}

setup_venv() {
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    local stamp="$VENV/.xdp-ovpn-installed" want
    # Rebuild when the package's build inputs change: its metadata and the native sources.
    want=$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT"/native/*.[ch] | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "setup: installing Python dependencies into $VENV"
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e "$ROOT[test,bench]"
        echo "$want" > "$stamp"
    fi
    link_bcc
    "$VENV/bin/python" -c 'import bcc, cryptography, OpenSSL, pyroute2, click' \
        || die "the virtualenv cannot import its dependencies"
    "$VENV/bin/python" -c 'import xdp_ovpn._native' \
        || die "the native engine (xdp_ovpn._native) did not build"
}

run_tests() {
    cd "$ROOT"
    echo "== ruff"
    "$VENV/bin/ruff" check .
    echo "== pytest"
    set +e
    "$VENV/bin/python" -m pytest "$@"
    local rc=$?
    set -e
    # pytest exits 5 when nothing was collected: that is a broken suite, not a pass.
    [ "$rc" -eq 5 ] && die "pytest collected no tests"
    return "$rc"
}

install_debian_packages
setup_venv

case "${1:-env}" in
    env) echo "setup: ready; activate with: . $VENV/bin/activate" ;;
    test) shift; run_tests "$@" ;;
    demo) shift; "$VENV/bin/xdp-ovpn" doctor && exec "$VENV/bin/xdp-ovpn" lab demo "$@" ;;
    *) die "unknown job '${1}': use demo, test or env" ;;
esac
