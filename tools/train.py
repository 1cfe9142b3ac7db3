"""Train a detector or segmentor from an mmdet or mmseg config.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm,mpi}]

The flags are mmdet's and mmseg's. The config's ``default_scope`` decides
which registries build it. Multi-process training: tools/dist_train.sh.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from checkpoint_utils import add_fit_hook, checkpoint_errors  # noqa: E402
from tool_utils import (  # noqa: E402
    DictAction,
    build_runner,
    check_checkpoint,
    check_dataset_paths,
    default_work_dir,
    fail,
    load_config,
    set_local_rank,
    setup_cpu_distributed,
)

from mmswin.engine import amp_optim_wrapper_type  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr linearly from the config\'s '
                        'auto_scale_lr.base_batch_size to the real one')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CHECKPOINT, or without a value from the latest '
        'checkpoint in the work dir')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. '
        'train_dataloader.batch_size=4 (lists as a=[1,2])')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank; torchrun sets the LOCAL_RANK variable instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def apply_args(cfg, args: argparse.Namespace) -> None:
    """Fold the command-line flags into ``cfg`` (in place)."""
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(
        args.config)
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper in ('AmpOptimWrapper', 'mmswin.AutocastOptimWrapper'):
            print('AMP is already on in this config', file=sys.stderr)
        elif wrapper != 'OptimWrapper':
            fail(f'--amp replaces OptimWrapper, but this config uses '
                 f'{wrapper}')
        else:
            # mmengine's AmpOptimWrapper needs CUDA; on CPU mmswin's
            # AutocastOptimWrapper runs bfloat16 autocast instead.
            cfg.optim_wrapper.type = amp_optim_wrapper_type()
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr')
        if not scale or 'base_batch_size' not in scale:
            fail('--auto-scale-lr needs auto_scale_lr=dict('
                 'base_batch_size=N) in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume


def check_start_checkpoint(cfg) -> None:
    """Check the file training starts from, and add mmswin's fit check:
    ``--resume`` refuses a checkpoint of another model; ``load_from``
    (fine-tuning) loads what fits and says in one line what it skipped."""
    path = cfg.get('load_from')
    if cfg.get('resume') and not path:
        from mmengine.runner import find_latest_checkpoint
        path = find_latest_checkpoint(cfg.work_dir)
    if not path:
        return
    check_checkpoint(path)
    add_fit_hook(cfg, 'resume' if cfg.get('resume') else 'partial', path)


def main(argv: Optional[List[str]] = None):
    """Train; returns the trained model."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    apply_args(cfg, args)
    loaders = ['train_dataloader']
    if cfg.get('val_cfg') and cfg.get('val_dataloader'):
        loaders.append('val_dataloader')
    check_dataset_paths(cfg, loaders)
    check_start_checkpoint(cfg)
    setup_cpu_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    with checkpoint_errors():
        return runner.train()


if __name__ == '__main__':
    main()
