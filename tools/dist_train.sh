#!/usr/bin/env bash
# Multi-process training with torchrun:
#   tools/dist_train.sh CONFIG NUM_PROCS [train.py options...]
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT (as mmdet/mmseg) and
# PYTHON (default: tools/find_python.sh: `python` with torch, else
# .venv/bin/python). Without CUDA, train.py joins with gloo.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [train.py options...]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" train.py "$2" \
    "$1" --launcher pytorch "${@:3}"
