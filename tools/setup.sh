#!/usr/bin/env bash
# Creates .venv and installs the project with its test extra. Run by `make setup` (and so by
# `make demo` / `make test`). Needs only Python 3.11+ and Java 17+ on the machine.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

"$PYTHON" - <<'PY' || { echo "setup: Python 3.11+ is required (found $($PYTHON --version 2>&1))" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null || [ -z "$(java_major)" ]; then
  echo "setup: Java 17 or newer is required by Spark and was not found (java -version)." >&2
  echo "       Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless ; macOS: brew install openjdk@17" >&2
  exit 1
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
# Torch is pinned and installed first, so the project install below adds nothing heavy.
# TORCH_INDEX picks a wheel index (a CPU-only or a CUDA one) where the default one would not do.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  $PIP install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "torch==$TORCH_VERSION"
fi
$PIP install -e ".[dev]"
# datatrove's language filter (the end-to-end benchmark's reference) insists on this build of fasttext by
# name: the same `fasttext` module, with a predict() that works under NumPy 2; our code works with either
$PIP install --no-deps --force-reinstall "fasttext-numpy2-wheel==0.9.2"
"$VENV/bin/python" -m tools.assets
echo "setup: ready ($("$VENV/bin/python" --version), Java $(java_major))"
