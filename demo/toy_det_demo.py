"""The detection quickstart behind ``make demo``, on a CPU in minutes.

1. draws the toy COCO shapes (tools/misc/make_toy_data.py),
2. trains the toy Swin Mask R-CNN with tools/train.py (progress shown),
3. evaluates the last checkpoint on the val split with tools/test.py,
   drawing every val prediction (boxes and masks) into PNGs,
4. plots the training losses, and prints bbox and segm mAP and the time.

    python demo/toy_det_demo.py [--work-dir work_dirs/demo]
        [--config configs/toy/mask-rcnn_swin-toy_fpn_toy-coco.py]
        [--threads 1] [--epochs N]
"""
import argparse
import glob
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = 'configs/toy/mask-rcnn_swin-toy_fpn_toy-coco.py'


def _load_tool(relative_path: str):
    """Import a script under tools/ as a module (tools/test.py would clash
    with the standard library's ``test`` package as a plain import)."""
    path = osp.join(REPO, relative_path)
    name = 'mmswin_tool_' + osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(step: str, argv: List[str], env: Dict[str, str]) -> None:
    print(f'\n==> {step}\n    {" ".join(argv)}', flush=True)
    result = subprocess.run(argv, cwd=REPO, env=env)
    if result.returncode:
        sys.exit(f'demo stopped: {step} failed (exit {result.returncode})')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--data', default='data/toy',
                        help='toy data folder (gets coco/)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch threads for training; 1 leaves the '
                        'other core to data loading and copes best with a '
                        'busy machine')
    parser.add_argument('--epochs', type=int, default=None,
                        help='override the config\'s number of epochs')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Run the quickstart; returns the val metrics."""
    args = parse_args(argv)
    start = time.perf_counter()
    python = sys.executable
    # Passive OpenMP waits (set before torch loads, here and in the
    # tools): spinning threads crawl on shared cores.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    os.environ['PYTHONWARNINGS'] = 'ignore'
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    work_dir = osp.abspath(osp.join(REPO, args.work_dir))
    _run('making the toy COCO data',
         [python, 'tools/misc/make_toy_data.py', '--out', args.data,
          '--kind', 'coco'], env)
    options = []
    if args.data != 'data/toy':  # the toy configs' own data_root
        root = f'{args.data}/coco/'
        options = [f'{loader}.dataset.data_root={root}' for loader in (
            'train_dataloader', 'val_dataloader', 'test_dataloader')]
        options += [f'{evaluator}.ann_file={root}annotations/val.json'
                    for evaluator in ('val_evaluator', 'test_evaluator')]
    train_options = list(options)
    if args.epochs:
        train_options += [f'train_cfg.max_epochs={args.epochs}',
                          f'train_cfg.val_interval={args.epochs}',
                          f'default_hooks.checkpoint.interval={args.epochs}']
    train_start = time.perf_counter()
    _run('training (the log line every 20 iterations shows the ETA)',
         [python, 'tools/train.py', args.config, '--work-dir', work_dir,
          *(['--cfg-options', *train_options] if train_options else [])],
         env)
    train_seconds = time.perf_counter() - train_start

    print('\n==> evaluating the last checkpoint on val, drawing predictions',
          flush=True)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    predictions = osp.join(work_dir, 'predictions')
    import torch
    torch.set_num_threads(args.threads)
    metrics = _load_tool('tools/test.py').main(
        [args.config, checkpoint, '--work-dir', work_dir, '--show-dir',
         predictions, *(['--cfg-options', *options] if options else [])])
    loss_png = osp.join(work_dir, 'loss_curve.png')
    _load_tool('tools/analysis_tools/plot_loss.py').main(
        [work_dir, '--out', loss_png])

    minutes, seconds = divmod(time.perf_counter() - start, 60)
    pngs = glob.glob(osp.join(predictions, '*.png'))
    print(f'\n{"=" * 60}\n'
          f'toy val bbox mAP: {metrics["coco/bbox_mAP"]:.3f}   '
          f'segm mAP: {metrics["coco/segm_mAP"]:.3f}\n'
          f'total time: {int(minutes)} min {seconds:.0f} s '
          f'(training {train_seconds / 60:.1f} min)\n'
          f'{len(pngs)} prediction drawings in {predictions}/\n'
          f'loss curves in {loss_png}\n{"=" * 60}')
    return metrics


if __name__ == '__main__':
    main()
