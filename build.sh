#!/bin/sh
# build.sh: set up, build and test fflua from a fresh clone.
#
#   ./build.sh example   install what is missing, build, run examples/sums.lua
#   ./build.sh test      install what is missing, build the plain, the
#                        AddressSanitizer, the ThreadSanitizer and the fuzzing
#                        builds, run the tests of all four under one ctest
#   ./build.sh bench     also install what the benchmarks compare against
#                        (dask.distributed), build, run every benchmark
#   ./build.sh deps      only install (as root) or list (otherwise) what is missing
#   ./build.sh build     deps, then the plain build in build/
#
# Environment: FFLUA_JOBS (parallel jobs, default: number of cores),
# FFLUA_BUILD_DIR (default: build), FFLUA_ASAN_DIR (default: build-asan),
# FFLUA_TSAN_DIR (default: build-tsan), FFLUA_FUZZ_DIR (default: build-fuzz),
# FFLUA_FUZZ_SECONDS (how long each fuzz test runs, default: 60),
# FFLUA_CTEST_ARGS (more ctest arguments).
set -eu

cd "$(dirname "$0")"
top=$(pwd)
build_dir=${FFLUA_BUILD_DIR:-build}
asan_dir=${FFLUA_ASAN_DIR:-build-asan}
tsan_dir=${FFLUA_TSAN_DIR:-build-tsan}
fuzz_dir=${FFLUA_FUZZ_DIR:-build-fuzz}
fuzz_seconds=${FFLUA_FUZZ_SECONDS:-60}
jobs=${FFLUA_JOBS:-$(nproc 2>/dev/null || echo 2)}

# Every Debian 12 package the build and the tests need. Keep in step with
# docs/building.md.
packages="gcc libc6-dev make cmake pkg-config ca-certificates
liblua5.4-dev lua5.4 libuv1-dev liblmdb-dev libpcre2-dev libedit-dev
libxxhash-dev libsodium-dev lua-busted lua-check lua-cjson clang libclang-rt-14-dev
clang-format graphviz chromium luarocks groff-base systemd python3-jsonschema
python3-yaml slurmctld slurmd slurm-client munge"

# What only the benchmarks need (bench/cluster_dask.py).
bench_packages="python3-distributed"

missing_packages() {
    for p in $packages ${extra_packages:-}; do
        s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        case "$s" in
            *" installed") ;;
            *) printf '%s ' "$p" ;;
        esac
    done
}

deps() {
    # A root directory no other user may search (mode 700, as in some
    # chroots and containers) breaks every install script that runs as a
    # package's own user (munge's) and every daemon that drops root (the
    # Slurm spec's munged): give it the mode every Debian system has.
    if [ "$(id -u)" = 0 ]; then
        case "$(stat -c %A /)" in
            d????????x) ;;
            *) echo "build.sh: / is mode $(stat -c %a /): making it 755, as Debian has it" >&2
               chmod 755 / ;;
        esac
    fi
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "build.sh: these Debian packages are missing: $missing" >&2
        echo "build.sh: install them as root with:" >&2
        echo "    apt-get update && apt-get install -y --no-install-recommends $missing" >&2
        exit 1
    fi
    echo "build.sh: installing $missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

configure_and_build() { # dir, extra cmake args...
    dir=$1; shift
    cmake -S "$top" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$jobs"
}

# The libFuzzer build: clang, only the fuzz_* targets (target fuzz) and
# their tests.
# CC applies when the directory is first configured; a build-fuzz/ made
# with another compiler has to be removed.
configure_and_build_fuzz() {
    CC=clang cmake -S "$top" -B "$fuzz_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DFFLUA_FUZZ=ON -DFFLUA_BUILD_TESTS=OFF -DFFLUA_LTO=OFF \
        -DFFLUA_FUZZ_SECONDS="$fuzz_seconds" >/dev/null
    cmake --build "$fuzz_dir" -j "$jobs" --target fuzz
}

build() {
    deps
    configure_and_build "$build_dir" -DFFLUA_BUILD_TESTS=ON
}

test_all() {
    deps
    configure_and_build "$build_dir" -DFFLUA_BUILD_TESTS=ON
    configure_and_build "$asan_dir" -DFFLUA_BUILD_TESTS=ON -DFFLUA_SANITIZE=ON
    # ThreadSanitizer: only the tests of threaded code (spec/CMakeLists.txt).
    configure_and_build "$tsan_dir" -DFFLUA_BUILD_TESTS=ON -DFFLUA_TSAN=ON
    configure_and_build_fuzz
    # One ctest run over the four builds, so that one summary counts every
    # test; the fuzz tests run alongside the others.
    suite="$build_dir/suite"
    mkdir -p "$suite"
    printf 'subdirs("%s" "%s" "%s" "%s")\n' "$top/$build_dir" "$top/$asan_dir" \
        "$top/$tsan_dir" "$top/$fuzz_dir" > "$suite/CTestTestfile.cmake"
    cd "$suite"
    exec ctest --output-on-failure -j "$jobs" ${FFLUA_CTEST_ARGS:-}
}

case "${1:-}" in
    deps) deps ;;
    build) build ;;
    example) build; exec "$build_dir/fflua" examples/sums.lua ;;
    test) test_all ;;
    bench)
        extra_packages=$bench_packages
        build
        "$build_dir/bench_sched"
        "$build_dir/fflua" bench/local_engine.lua
        "$build_dir/fflua" bench/storage.lua
        exec "$build_dir/fflua" bench/cluster.lua ;;
    *) sed -n '3,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
