"""What tools/train.py, tools/test.py and the analysis tools share.

These tools serve mmdet and mmseg configs alike: the config's
``default_scope`` picks the registries. A wrong path (config, checkpoint,
dataset) ends the tool with one line naming the path and the fix instead
of a traceback from deep inside a dataset class.
"""
import os
import os.path as osp
import sys
import warnings
from typing import Iterator, List, NoReturn, Optional, Sequence

import torch
from mmengine.config import Config, ConfigDict, DictAction

# Importing mmswin registers its modules and its safe checkpoint loading.
import mmswin  # noqa: F401

__all__ = ['DictAction', 'fail', 'load_config', 'check_dataset_paths',
           'check_checkpoint', 'replace_sync_bn', 'setup_cpu_distributed',
           'build_runner', 'default_work_dir', 'set_local_rank',
           'add_backend_args', 'check_backend_args']


def fail(message: str) -> NoReturn:
    """Print ``error: message`` to stderr and exit with status 2."""
    print(f'error: {message}', file=sys.stderr)
    raise SystemExit(2)


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file and apply ``--cfg-options`` overrides."""
    if not osp.isfile(path):
        fail(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _dataset_cfgs(dataset: dict) -> Iterator[dict]:
    """The leaf dataset configs inside wrappers (RepeatDataset,
    ConcatDataset, MultiImageMixDataset...)."""
    if 'dataset' in dataset:
        yield from _dataset_cfgs(dataset['dataset'])
    elif 'datasets' in dataset:
        for child in dataset['datasets']:
            yield from _dataset_cfgs(child)
    else:
        yield dataset


def _is_local(path: str) -> bool:
    return '://' not in path


def check_dataset_paths(cfg: Config, loaders: Sequence[str]) -> None:
    """Fail clearly when a dataloader's ``data_root``, ``ann_file`` or
    ``data_prefix`` folder is missing, before any dataset is built.

    Relative ``ann_file`` and ``data_prefix`` entries are joined to
    ``data_root`` as mmengine's ``BaseDataset`` does.
    """
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for dataset in _dataset_cfgs(cfg[loader]['dataset']):
            root = dataset.get('data_root') or ''
            hint = (f'(from {loader}); generate or download the dataset, or '
                    f'point --cfg-options {loader}.dataset.data_root=... at '
                    'it')
            if root and _is_local(root) and not osp.isdir(root):
                fail(f'dataset folder not found: {root} {hint}')
            paths: List[str] = []
            if dataset.get('ann_file'):
                paths.append(dataset['ann_file'])
            prefix = dataset.get('data_prefix') or {}
            paths += [p for p in prefix.values() if isinstance(p, str) and p]
            for path in paths:
                full = path if osp.isabs(path) else osp.join(root, path)
                if _is_local(full) and not osp.exists(full):
                    fail(f'dataset file not found: {full} {hint}')


def check_checkpoint(path: str) -> None:
    """Fail clearly when a local checkpoint does not exist, is a directory,
    or is damaged or no checkpoint at all (a cheap look at its zip
    directory or safetensors header: mmswin.checkpoint.probe_checkpoint).
    """
    if not _is_local(path):
        return
    if not osp.exists(path):
        fail(f'checkpoint not found: {path}')
    from mmswin.checkpoint import CheckpointError, probe_checkpoint
    try:
        probe_checkpoint(path)
    except CheckpointError as err:
        fail(str(err))


def replace_sync_bn(node, norm_type: str = 'BN') -> int:
    """Replace every ``norm_cfg=dict(type='SyncBN')`` in a config tree by
    ``norm_type`` in place; return how many were replaced.

    torch's SyncBatchNorm only runs on CUDA once several processes train
    (single-process runs fall back to BN: mmengine reverts it), so
    multi-process CPU runs need plain BN.
    """
    count = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = norm_type
            count += 1
        for value in node.values():
            count += replace_sync_bn(value, norm_type)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_sync_bn(value, norm_type)
    return count


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch`` work without CUDA.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` and wraps the
    model with ``device_ids=[LOCAL_RANK]``, both CUDA-only. Without CUDA
    this joins the torchrun process group with gloo here (mmengine then
    skips its own set-up) and wraps the model with ``device_ids=None``.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        fail(f'--launcher {launcher} needs CUDA; on CPU use --launcher '
             'pytorch (tools/dist_train.sh) with the gloo backend')
    backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend')
    if backend != 'gloo':
        warnings.warn(f'dist backend {backend!r} needs CUDA; using gloo '
                      '(set env_cfg.dist_cfg.backend=gloo to silence this)')
        cfg.merge_from_dict({'env_cfg.dist_cfg.backend': 'gloo'})
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')
    wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    replaced = replace_sync_bn(cfg.model)
    if replaced and torch.distributed.get_rank() == 0:
        print(f'{replaced} SyncBN layer configs set to BN: SyncBN needs '
              'CUDA in multi-process training', file=sys.stderr)


def build_runner(cfg: Config):
    """Build the runner the config asks for (``runner_type``) or
    mmengine's ``Runner``; the config's ``default_scope`` picks mmdet's or
    mmseg's registries."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def default_work_dir(config_path: str) -> str:
    """``./work_dirs/<config name>``, mmdet's and mmseg's default."""
    name = osp.splitext(osp.basename(config_path))[0]
    return osp.join('./work_dirs', name)


def set_local_rank(local_rank: int) -> None:
    """Export LOCAL_RANK for launchers that pass it as an argument."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def add_backend_args(parser, verb: str) -> None:
    """``--backend`` and ``--precision``: CHECKPOINT is then an exported
    ``.onnx`` or OpenVINO ``.xml`` that the tool ``verb``s with that
    runtime (mmswin.deploy) instead of PyTorch."""
    parser.add_argument('--backend', choices=['onnxruntime', 'openvino'],
                        help=f'{verb} the exported model CHECKPOINT (.onnx, '
                        'or OpenVINO .xml) with this runtime instead of '
                        'PyTorch')
    parser.add_argument('--precision', choices=['fp32', 'bf16'],
                        default='fp32',
                        help='with --backend openvino: inference precision')


def check_backend_args(args) -> None:
    """Refuse ``--precision`` without ``--backend`` (PyTorch would run
    fp32 and ignore it)."""
    if args.precision != 'fp32' and not args.backend:
        fail(f'--precision {args.precision} needs --backend openvino (an '
             'exported model); PyTorch runs the checkpoint in fp32')
