#!/usr/bin/env bash
# Create or update a venv with the locked, tested OpenMMLab stack and vllama_mm (editable).
#
#   bash tools/setup_env.sh            # idempotent; a second run changes nothing (~1 min)
#
# Environment knobs:
#   VLLAMA_VENV        venv path (default: <repo>/.venv)
#   VLLAMA_CACHE       wheel cache for the mmcv build (default: ~/.cache/vllama_mm)
#   PYTHON             interpreter used to create the venv (default: python3; tested 3.11)
#
# Every pip call installs under `-c requirements/lock.txt`, the lock of the whole stack
# (generated from requirements/stack.in by tools/update_lock.sh), so no later step can move
# a package an earlier one pinned. The mmcv 2.1.0 ops are compiled against the installed
# torch (~30 min on 2 idle cores, up to ~65 under load); the wheel is cached under $VLLAMA_CACHE keyed by (mmcv, torch,
# python, machine), because a wheel built against one torch fails at import with another
# (undefined C++ symbols).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLAMA_VENV:-$REPO/.venv}"
CACHE="${VLLAMA_CACHE:-$HOME/.cache/vllama_mm}"
PY_BOOT="${PYTHON:-python3}"
LOCK="$REPO/requirements/lock.txt"

step() { printf '\n\033[1m[setup_env] %s\033[0m\n' "$*"; }
die()  { printf '\n[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "step failed (line $LINENO): see the output above"' ERR

[ -f "$LOCK" ] || die "lock file $LOCK not found (regenerate it with tools/update_lock.sh)"
pin() {  # pin <name> -> its version in the lock
  local v
  v=$(sed -n "s/^$1==//Ip" "$LOCK")
  [ -n "$v" ] || die "$1 is not pinned in $LOCK"
  echo "$v"
}
TORCH_VERSION=$(pin torch)
TORCHVISION_VERSION=$(pin torchvision)
MMENGINE_VERSION=$(pin mmengine)
MMCV_VERSION=$(pin mmcv)
MMPRETRAIN_VERSION=$(pin mmpretrain)
MMSEG_VERSION=$(pin mmsegmentation)
MMDET_VERSION=$(pin mmdet)

start=$(date +%s)
command -v "$PY_BOOT" >/dev/null || die "'$PY_BOOT' not found; set PYTHON=/path/to/python3.10+"
"$PY_BOOT" -c 'import sys; assert sys.version_info >= (3, 10)' \
  || die "python >= 3.10 required by torch $TORCH_VERSION (found $("$PY_BOOT" --version 2>&1))"
"$PY_BOOT" -c 'import sys; assert sys.version_info[:2] == (3, 11)' \
  || echo "[setup_env] note: the lock was resolved for $(sed -n 's/^# Resolved for //p' "$LOCK") and this is $("$PY_BOOT" --version 2>&1): untested"

step "virtual environment: $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY_BOOT" -m venv "$VENV" || die "could not create venv at $VENV (is python3-venv installed?)"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
INSTALL=("${PIP[@]}" install -c "$LOCK")   # every install goes through the lock
# setuptools<70: mmcv's setup.py imports pkg_resources; wheel/ninja for the extension build.
"${INSTALL[@]}" -q pip setuptools wheel ninja \
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
  "${INSTALL[@]}" torch torchvision numpy \
    || die "could not install torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION from PyPI"
fi
"$PY" -c 'import torch, torchvision; torchvision.ops.nms' \
  || die "torch/torchvision installed but torchvision's ops do not load"

step "mmengine $MMENGINE_VERSION"
"${INSTALL[@]}" -q mmengine || die "could not install mmengine"

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
    echo "no cached wheel at $WHEEL_DIR: building (about 30 min on 2 idle cores, longer under load) ..."
    mkdir -p "$WHEEL_DIR"
    tmp=$(mktemp -d)
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "${PIP[@]}" wheel -c "$LOCK" --no-build-isolation --no-deps --no-cache-dir -w "$tmp" mmcv \
      || { rm -rf "$tmp"; die "mmcv $MMCV_VERSION build failed (needs gcc/g++ and python headers)"; }
    mv "$tmp"/mmcv-*.whl "$WHEEL_DIR"/ && rm -rf "$tmp"
  else
    echo "using cached wheel $(ls "$WHEEL_DIR"/mmcv-*.whl)"
  fi
  "${INSTALL[@]}" -q --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-*.whl
  "${INSTALL[@]}" -q addict pyyaml yapf Pillow packaging opencv-python numpy
  mmcv_ok || { rm -rf "$WHEEL_DIR"; die "mmcv installed but mmcv.ops does not import; removed the cached wheel, rerun to rebuild"; }
fi

step "mmpretrain $MMPRETRAIN_VERSION, mmsegmentation $MMSEG_VERSION, mmdet $MMDET_VERSION, tools"
# openmim: 0.3.7 (see requirements/stack.in); psutil: mmdet's benchmark tool; model-index:
# the model-zoo metafiles; diffusers/torchdiffeq: image generation; onnx*: ONNX export;
# matplotlib (pinned for the libraries' visualizers) and grad-cam: mmpretrain's
# browse_dataset.py / vis_cam.py.
"${INSTALL[@]}" -q mmpretrain mmsegmentation mmdet ftfy regex pycocotools \
  openmim pandas psutil model-index diffusers torchdiffeq onnx onnxruntime onnxscript pytest \
  matplotlib grad-cam \
  || die "could not install the OpenMMLab task libraries and tools"

step "vllama_mm (editable)"
"${INSTALL[@]}" -q --no-deps --no-build-isolation -e "$REPO" || die "could not install vllama_mm"

step "check: the venv against the lock, pip check, imports"
"$PY" "$REPO/tools/check_lock.py" --allow-extra \
  || die "the venv differs from $LOCK (lines above); a package installed by hand? rerun, or recreate the venv"
"${PIP[@]}" check || die "pip check found broken requirements (above)"
"$PY" - <<'PYEOF' || die "the installed stack does not import"
import torch, torchvision, mmengine, mmcv, mmcv.ops, mmpretrain, mmseg, mmdet, vllama_mm
print(f"torch {torch.__version__} | torchvision {torchvision.__version__} | mmengine {mmengine.__version__} | "
      f"mmcv {mmcv.__version__} | mmpretrain {mmpretrain.__version__} | mmseg {mmseg.__version__} | "
      f"mmdet {mmdet.__version__} | vllama_mm {vllama_mm.__version__}")
PYEOF
echo "[setup_env] done in $(( $(date +%s) - start )) s. Activate with: source $VENV/bin/activate"
