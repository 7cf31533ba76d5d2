#!/usr/bin/env bash
# SLURM training, one task per GPU (or per CPU rank):
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [PORT=29500] [SRUN_ARGS=...] \
#     bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# GPUS: total number of tasks (ranks). GPUS_PER_NODE=0: CPU-only tasks (no --gres; the ranks
# use the gloo backend), TASKS_PER_NODE of them per node (default: all GPUS on one node).
# PORT (or MASTER_PORT): the rendezvous port on the first node; pick a free one when several
# jobs can share a node.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]" >&2; exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PORT=${PORT:-${MASTER_PORT:-29500}}
for v in GPUS GPUS_PER_NODE CPUS_PER_TASK PORT; do
  if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then
    echo "error: $v=${!v} is not a whole number" >&2; exit 2
  fi
done
if [ "$GPUS" -lt 1 ]; then echo "error: GPUS=$GPUS: need at least one task" >&2; exit 2; fi
if [ "$GPUS_PER_NODE" -gt 0 ]; then
  GRES=(--gres=gpu:"$GPUS_PER_NODE")
  TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS_PER_NODE}
else
  GRES=()  # CPU-only job: no GPU request
  TASKS_PER_NODE=${TASKS_PER_NODE:-$GPUS}
fi
DIR="$(cd "$(dirname "$0")" && pwd)"
PYTHON=${PYTHON:-python}
export MASTER_PORT=$PORT
# shellcheck disable=SC2086
PYTHONPATH="$DIR/..":${PYTHONPATH:-} \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    "${GRES[@]}" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$TASKS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" --launcher=slurm "${@:5}"
