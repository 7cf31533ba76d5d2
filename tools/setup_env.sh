#!/usr/bin/env bash
# Create or update .venv with the pinned, tested OpenMMLab stack and vllama_mm (editable).
#
#   bash tools/setup_env.sh            # idempotent; second run takes about a minute
#
# Environment knobs:
#   VLLAMA_VENV        venv path (default: <repo>/.venv)
#   VLLAMA_CACHE       wheel cache for the mmcv build (default: ~/.cache/vllama_mm)
#   PYTHON             interpreter used to create the venv (default: python3)
#
# The mmcv 2.1.0 ops are compiled against the installed torch (~11 min on 2 cores).
# The built wheel is cached under $VLLAMA_CACHE keyed by (mmcv, torch, python), because a
# wheel built against one torch fails at import with another (undefined C++ symbols).
set -euo pipefail

# ---- the tested stack (see README "Supported versions") ----
TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0
MMENGINE_VERSION=0.10.7
MMCV_VERSION=2.1.0
MMPRETRAIN_VERSION=1.2.0
MMSEG_VERSION=1.2.2
MMDET_VERSION=3.3.0

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLAMA_VENV:-$REPO/.venv}"
CACHE="${VLLAMA_CACHE:-$HOME/.cache/vllama_mm}"
PY_BOOT="${PYTHON:-python3}"

step() { printf '\n\033[1m[setup_env] %s\033[0m\n' "$*"; }
die()  { printf '\n[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "step failed (line $LINENO): see the output above"' ERR

start=$(date +%s)
command -v "$PY_BOOT" >/dev/null || die "'$PY_BOOT' not found; set PYTHON=/path/to/python3.8+"
"$PY_BOOT" -c 'import sys; assert sys.version_info >= (3, 8)' \
  || die "python >= 3.8 required (found $("$PY_BOOT" --version 2>&1))"

step "virtual environment: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY_BOOT" -m venv "$VENV" || die "could not create venv at $VENV (is python3-venv installed?)"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
# setuptools<70: mmcv's setup.py imports pkg_resources; wheel/ninja for the extension build.
"${PIP[@]}" install -q --upgrade "pip>=23" "setuptools>=60,<70" wheel ninja \
  || die "could not install pip/setuptools/wheel into the venv"

installed() {  # installed <dist> <version>  -> 0 if that exact version is present
  "$PY" - "$1" "$2" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
name, want = sys.argv[1], sys.argv[2]
sys.exit(0 if version(name).split('+')[0] == want else 1)
PYEOF
}

step "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
if installed torch "$TORCH_VERSION" && installed torchvision "$TORCHVISION_VERSION"; then
  echo "already installed"
else
  "${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "numpy<2" \
    || die "could not install torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION from PyPI"
fi
"$PY" -c 'import torch, torchvision; torchvision.ops.nms' \
  || die "torch/torchvision installed but torchvision's ops do not load"

step "mmengine $MMENGINE_VERSION"
"${PIP[@]}" install -q "mmengine==$MMENGINE_VERSION" "numpy<2" || die "could not install mmengine"

step "mmcv $MMCV_VERSION with ops (compiled against torch $TORCH_VERSION)"
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')
TORCH_FULL=$("$PY" -c 'import torch; print(torch.__version__)')
KEY="mmcv-${MMCV_VERSION}_torch-${TORCH_FULL}_${PYTAG}_$(uname -m)"
WHEEL_DIR="$CACHE/$KEY"
mmcv_ok() { "$PY" -c 'import mmcv, mmcv.ops; from mmcv.ops import roi_align, nms; assert mmcv.__version__ == "'"$MMCV_VERSION"'"' 2>/dev/null; }
if mmcv_ok; then
  echo "already installed and its ops load"
else
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    echo "no cached wheel at $WHEEL_DIR: building (about 11 min on 2 cores) ..."
    mkdir -p "$WHEEL_DIR"
    tmp=$(mktemp -d)
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "${PIP[@]}" wheel --no-build-isolation --no-deps --no-cache-dir -w "$tmp" "mmcv==$MMCV_VERSION" \
      || { rm -rf "$tmp"; die "mmcv $MMCV_VERSION build failed (needs gcc/g++ and python headers)"; }
    mv "$tmp"/mmcv-*.whl "$WHEEL_DIR"/ && rm -rf "$tmp"
  else
    echo "using cached wheel $(ls "$WHEEL_DIR"/mmcv-*.whl)"
  fi
  "${PIP[@]}" install -q --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-*.whl
  "${PIP[@]}" install -q addict pyyaml yapf Pillow packaging "opencv-python<4.12" "numpy<2"
  mmcv_ok || { rm -rf "$WHEEL_DIR"; die "mmcv installed but mmcv.ops does not import; removed the cached wheel, rerun to rebuild"; }
fi

step "mmpretrain $MMPRETRAIN_VERSION, mmsegmentation $MMSEG_VERSION, mmdet $MMDET_VERSION, tools"
"${PIP[@]}" install -q \
  "mmpretrain==$MMPRETRAIN_VERSION" "mmsegmentation==$MMSEG_VERSION" "mmdet==$MMDET_VERSION" \
  ftfy regex pycocotools "numpy<2" "opencv-python<4.12" pytest \
  || die "could not install the OpenMMLab task libraries"

step "openmim 0.3.9 (mim train/test), without openxlab"
# openmim's declared deps pull opendatalab/openxlab, which downgrade setuptools and requests
# and are not needed by \`mim train\`/\`mim test\`: install mim alone plus what it imports.
"${PIP[@]}" install -q --no-deps "openmim==0.3.9" \
  && "${PIP[@]}" install -q click colorama model-index pandas rich tabulate requests \
  || die "could not install openmim"

step "vllama_mm (editable)"
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$REPO" || die "could not install vllama_mm"

step "check"
"$PY" - <<'PYEOF' || die "the installed stack does not import"
import torch, torchvision, mmengine, mmcv, mmcv.ops, mmpretrain, mmseg, mmdet, vllama_mm
print(f"torch {torch.__version__} | torchvision {torchvision.__version__} | mmengine {mmengine.__version__} | "
      f"mmcv {mmcv.__version__} | mmpretrain {mmpretrain.__version__} | mmseg {mmseg.__version__} | "
      f"mmdet {mmdet.__version__} | vllama_mm {vllama_mm.__version__}")
PYEOF
echo "[setup_env] done in $(( $(date +%s) - start )) s. Activate with: source $VENV/bin/activate"
