#!/usr/bin/env bash
# Builds KenLM's `lmplz` (n-gram estimation) and `build_binary` (and `query`, used by the tests) from
# the `kenlm` sdist on PyPI, with Debian's Boost, into .cache/kenlm/bin. Idempotent: does nothing when
# the binaries are there. Called by `make kenlm`.
#
#   tools/build_kenlm.sh            # needs: cmake g++ libboost-{program-options,system,thread,test}-dev
#                                   #        zlib1g-dev libbz2-dev liblzma-dev; installed with apt-get
#                                   #        when missing and running as root (otherwise: a clear message)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${KENLM_PREFIX:-$ROOT/.cache/kenlm}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BIN="$PREFIX/bin"

if [[ -x "$BIN/lmplz" && -x "$BIN/build_binary" && -x "$BIN/query" ]]; then
  echo "kenlm: binaries already in $BIN"
  exit 0
fi
PACKAGES="cmake build-essential libboost-program-options-dev libboost-system-dev libboost-thread-dev \
libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev"
missing() { ! command -v cmake >/dev/null || ! command -v g++ >/dev/null || [[ ! -e /usr/include/boost/program_options.hpp ]] \
  || [[ ! -e /usr/include/zlib.h ]] || [[ ! -e /usr/include/bzlib.h ]] || [[ ! -e /usr/include/lzma.h ]]; }
if missing; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    echo "kenlm: installing Debian build dependencies: $PACKAGES"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null
  else
    echo "kenlm: build dependencies missing; install them (as root): apt-get install -y $PACKAGES" >&2
    exit 1
  fi
fi

mkdir -p "$PREFIX/src" "$BIN"
cd "$PREFIX/src"
if ! ls kenlm-*.tar.gz >/dev/null 2>&1; then
  # --no-binary kenlm (not :all:): only kenlm as sdist; its build tools may come as wheels
  "$PYTHON" -m pip download --no-deps --no-binary kenlm --dest . kenlm
fi
SDIST="$(ls kenlm-*.tar.gz | sort | tail -n1)"
rm -rf source && mkdir source && tar -xzf "$SDIST" -C source --strip-components=1
cmake -S source -B build -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 -DBUILD_TESTING=OFF >/dev/null
cmake --build build --target lmplz build_binary query -j "$(nproc)"
cp build/bin/lmplz build/bin/build_binary build/bin/query "$BIN/"
echo "kenlm: built $(ls "$BIN" | tr '\n' ' ')in $BIN"
