#!/usr/bin/env bash
# Prints the Python that the launchers (dist_launch.sh, slurm_train.sh) and
# `make gpu-check` use when PYTHON is unset: `python` if it imports torch (an
# activated environment), else the repo's .venv that `make install` built.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"

has_torch() {
    "$1" -c 'import importlib.util as u, sys
sys.exit(u.find_spec("torch") is None)' 2>/dev/null
}

if command -v python >/dev/null 2>&1 && has_torch python; then
    echo python
elif [ -x "$REPO/.venv/bin/python" ] && has_torch "$REPO/.venv/bin/python"; then
    echo "$REPO/.venv/bin/python"
else
    echo "error: no Python with torch: 'python' lacks it and" \
        "$REPO/.venv/bin/python is missing. Run 'make install' (or" \
        "activate your environment), or set PYTHON=/path/to/python." >&2
    exit 2
fi
