"""Plot the training losses that mmengine logged in a work dir.

    python tools/analysis_tools/plot_loss.py WORK_DIR_OR_SCALARS_JSON
        [--out loss_curve.png] [--keys loss loss_cls ...]

Reads ``scalars.json`` (one JSON record per logging step, written by
mmengine's LocalVisBackend under ``WORK_DIR/TIMESTAMP/vis_data/``); with a
work dir, the newest run in it is plotted.
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tool_utils import fail  # noqa: E402


def find_scalars(path: str) -> str:
    """``path`` itself if it is a file, else the newest
    ``TIMESTAMP/vis_data/scalars.json`` under the work dir ``path``."""
    if osp.isfile(path):
        return path
    runs = glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json'))
    if not runs:
        fail(f'no */vis_data/scalars.json under {path}; is it a work dir '
             'of a finished training?')
    return max(runs, key=osp.getmtime)


def read_losses(scalars_file: str,
                keys: Optional[Sequence[str]] = None
                ) -> Dict[str, List[List[float]]]:
    """``{key: [[steps...], [values...]]}`` for every training record key
    starting with ``loss`` (or for ``keys``)."""
    curves: Dict[str, List[List[float]]] = {}
    with open(scalars_file) as f:
        for line in f:
            record = json.loads(line)
            if 'iter' not in record:
                continue  # validation records carry metrics, not losses
            for key, value in record.items():
                wanted = key in keys if keys else key.startswith('loss')
                if wanted:
                    steps, values = curves.setdefault(key, [[], []])
                    steps.append(record['step'])
                    values.append(value)
    if not curves:
        fail(f'no loss records in {scalars_file}')
    return curves


def plot(curves: Dict[str, List[List[float]]], out_file: str,
         title: str = 'training losses') -> None:
    """Draw every curve against the iteration; the total ``loss`` bold."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, (steps, values) in sorted(curves.items()):
        ax.plot(steps, values, label=key, linewidth=2.5 if key == 'loss'
                else 1.2)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> str:
    """Plot; returns the written file."""
    parser = argparse.ArgumentParser(description='Plot training losses')
    parser.add_argument('path', help='work dir or scalars.json')
    parser.add_argument('--out', default='loss_curve.png',
                        help='image to write')
    parser.add_argument('--keys', nargs='+', help='keys to plot (default: '
                        'all that start with "loss")')
    args = parser.parse_args(argv)
    scalars = find_scalars(args.path)
    plot(read_losses(scalars, args.keys), args.out)
    print(f'loss curves of {scalars} drawn into {args.out}')
    return args.out


if __name__ == '__main__':
    main()
