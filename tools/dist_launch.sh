#!/usr/bin/env bash
# torchrun, shared by dist_train.sh and dist_test.sh:
#   tools/dist_launch.sh SCRIPT NUM_PROCS [SCRIPT's arguments...]
# runs tools/SCRIPT in NUM_PROCS processes per node. Environment: NNODES,
# NODE_RANK, MASTER_ADDR, PORT (as mmdet/mmseg) and PYTHON (default:
# tools/find_python.sh: `python` with torch, else .venv/bin/python).
set -euo pipefail
SCRIPT=$1
NPROCS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
if [ -z "${PYTHON:-}" ]; then
    PYTHON=$(bash "$(dirname "$0")/find_python.sh")
fi

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROCS" \
    --master_port="$PORT" \
    "$(dirname "$0")/$SCRIPT" \
    "${@:3}"
