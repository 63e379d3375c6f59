#!/usr/bin/env bash
# Installs the Debian package in a bare debian:bookworm-slim container and uses it as an
# administrator would (the checks are in container_inside.sh). Run by hand: it needs a container
# runtime and the Debian archive.
#
#   tests/package/container_test.sh [BUILD_DIR]        (default build/; uses `docker`)
#   DOCKER=/path/to/docker tests/package/container_test.sh   (any docker-compatible CLI)
#   env: RINGLB_PORT        first port on 127.0.0.1 to use, the next one too (default 28180): the
#                           container shares the host's network so that apt reaches the archive
#        RINGLB_BASE_IMAGE  default docker.io/library/debian:bookworm-slim
#
# Builds the package with `cpack -G DEB` in BUILD_DIR (configured and built), copies it, the demo
# backend and etc/ringlb.toml into a temporary directory mounted at /pkg, and runs
# container_inside.sh there. Prints PASS/FAIL per check; exits 1 if any failed, 77 (SKIP, with
# the reason) when there is no container runtime or the container cannot reach the archive.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$source_dir/build}" && pwd) || exit 1
DOCKER=${DOCKER:-docker}
base_image=${RINGLB_BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
port0=${RINGLB_PORT:-28180}

if ! command -v "$DOCKER" >/dev/null 2>&1; then
    echo "SKIP: no container runtime ($DOCKER not found)"
    exit 77
fi
if ! "$DOCKER" image inspect "$base_image" >/dev/null 2>&1 && ! "$DOCKER" pull "$base_image" >/dev/null 2>&1; then
    echo "SKIP: $DOCKER has no image $base_image and cannot pull it"
    exit 77
fi

tmp=$(mktemp -d /tmp/ringlb-container.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
deb=ringlb_${version}_amd64.deb
rm -f "$build/$deb"
if ! (cd "$build" && cpack -G DEB) >"$tmp/cpack.log" 2>&1 || [[ ! -f "$build/$deb" ]]; then
    cat "$tmp/cpack.log"
    echo "FAIL: cpack -G DEB made no $deb"
    exit 1
fi
cp "$build/$deb" "$build/ringlb-demo-backend" "$source_dir/etc/ringlb.toml" "$here/container_inside.sh" "$tmp/"
chmod -R a+rX "$tmp"

"$DOCKER" run --rm --network host -v "$tmp:/pkg:ro" "$base_image" bash /pkg/container_inside.sh "$deb" "$port0"
status=$?
case $status in
0) echo "container_test.sh: PASS" ;;
77) echo "container_test.sh: SKIP" ;;
*) echo "container_test.sh: FAIL" ;;
esac
exit $status
