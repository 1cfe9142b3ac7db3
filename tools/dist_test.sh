#!/usr/bin/env bash
# Multi-process testing with torchrun:
#   tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py options...]
# Environment: NNODES, NODE_RANK, MASTER_ADDR, PORT and PYTHON, as in
# dist_train.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [test.py options...]" >&2
    exit 2
fi
exec bash "$(dirname "$0")/dist_launch.sh" test.py "$3" \
    "$1" "$2" --launcher pytorch "${@:4}"
