#!/usr/bin/env bash
# Installs what ringlb needs to build and run its demo on Debian 12, and nothing else; with
# --test also what the full test run needs (scripts/test.sh passes it).
# Idempotent: packages already installed are left alone, and the package lists are refreshed
# (apt-get update) only when something has to be installed. Uses sudo only when not root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

packages=(
    build-essential      # g++ 12, make
    cmake                # 3.25
    pkg-config           # finds liburing and c-ares
    liburing-dev         # io_uring engine
    libc-ares-dev        # DNS server entries (resolved in the background, with TTLs)
    libcli11-dev         # command line
    libtomlplusplus-dev  # config file
    doctest-dev          # unit and integration tests
    dnsmasq-base         # the local DNS server of the DNS tests
    curl                 # the demo's client
)

# --test: clang and its runtime for the fuzz targets, clang-tidy, PyYAML for the Kubernetes
# manifest check, groff for the man page check, dpkg-dev for the package's dependencies
# (dpkg-shlibdeps), systemd (systemd-analyze; nothing is started) and strace for the unit check.
if [[ "${1:-}" == "--test" ]]; then
    packages+=(clang libclang-rt-14-dev clang-tidy python3-yaml groff-base dpkg-dev systemd strace)
fi

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == "installed" ]]
}

missing=()
for package in "${packages[@]}"; do
    is_installed "$package" || missing+=("$package")
done

if ((${#missing[@]} == 0)); then
    echo "install-deps: all build dependencies are installed"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: apt-get not found; install these packages (Debian 12 names): ${missing[*]}" >&2
    exit 1
fi

as_root=()
if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-deps: not root and sudo not found; as root run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
    as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
fi

echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update
"${as_root[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
