"""Evaluate a checkpoint of an mmdet or mmseg config on its test split.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--show] [--show-dir DIR] [--wait-time S] [--tta]
        [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]

The flags are mmdet's and mmseg's; ``--out`` writes mmdet's raw results
(``.pkl``) or mmseg's prediction PNGs (a folder), by the config's scope.
A checkpoint that leaves part of the model unset or of another shape is
refused with one line (``--allow-partial`` evaluates anyway).

    python tools/test.py CONFIG MODEL_FILE --backend onnxruntime|openvino
        [--precision fp32|bf16] [the flags above but --tta, --launcher]

evaluates an exported model (``.onnx``, or OpenVINO ``.xml``) the same way:
same test_dataloader, evaluator, metrics and pictures
(mmswin.deploy.BackendModel).
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from checkpoint_utils import (  # noqa: E402
    add_allow_partial,
    add_fit_hook,
    checkpoint_errors,
)
from tool_utils import (  # noqa: E402
    DictAction,
    add_backend_args,
    build_runner,
    check_backend_args,
    check_checkpoint,
    check_dataset_paths,
    default_work_dir,
    fail,
    load_config,
    set_local_rank,
    setup_cpu_distributed,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a '
                                     'model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file (with '
                        '--backend: an exported .onnx or OpenVINO .xml)')
    add_backend_args(parser, 'evaluate')
    parser.add_argument('--work-dir', help='where to save the metrics log')
    parser.add_argument('--out', help='mmdet: dump results to this .pkl; '
                        'mmseg: write prediction PNGs to this folder')
    parser.add_argument('--show', action='store_true',
                        help='show predictions in a window')
    parser.add_argument('--show-dir',
                        help='draw predictions into this folder (relative '
                        'paths go under WORK_DIR/TIMESTAMP)')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each --show window stays')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation from the config\'s '
                        'tta_model and tta_pipeline')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. test_dataloader.batch_size=4')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    add_allow_partial(parser, 'evaluate')
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def enable_visualization(cfg, args: argparse.Namespace) -> None:
    """Turn on the config's visualization hook for --show / --show-dir."""
    hooks = cfg.get('default_hooks') or {}
    hook = hooks.get('visualization')
    if hook is None:
        fail('--show/--show-dir need default_hooks.visualization in the '
             'config (DetVisualizationHook or SegVisualizationHook)')
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if 'DetVisualizationHook' in hook['type']:
            hook['test_out_dir'] = args.show_dir
        else:  # mmseg's hook saves through the visualizer
            cfg.visualizer['save_dir'] = args.show_dir


def enable_tta(cfg) -> None:
    """Wrap the model in ``tta_model`` and test with ``tta_pipeline``."""
    for key in ('tta_model', 'tta_pipeline'):
        if key not in cfg:
            fail(f'--tta needs {key} in the config')
    cfg.model = dict(**cfg.tta_model, module=cfg.model)
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset['dataset']
    dataset.pipeline = cfg.tta_pipeline


def exported_runner(cfg, args: argparse.Namespace):
    """The test runner with the exported model ``args.checkpoint`` run by
    ``args.backend`` in place of the PyTorch model."""
    if args.tta or args.launcher != 'none':
        fail('--backend evaluates in one process without --tta (an exported '
             'graph is one test-time path)')
    try:
        from mmswin.deploy.backend_model import (
            BackendModel,
            build_backend_runner,
        )
        model = BackendModel(cfg, args.checkpoint, args.backend,
                             args.precision)
    except (ImportError, OSError, ValueError) as error:
        fail(f'{error}' + (' (install the deploy extra: pip install -e '
                           '".[deploy]")' if isinstance(error, ImportError)
                           else ''))
    return build_backend_runner(cfg, model)


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    """Test; returns the evaluator's metrics, e.g. ``coco/bbox_mAP``."""
    args = parse_args(argv)
    check_backend_args(args)
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or default_work_dir(
        args.config)
    if not args.backend:  # a model file: checked by its runtime
        check_checkpoint(args.checkpoint)
        cfg.load_from = args.checkpoint
        add_fit_hook(cfg, 'allow-partial' if args.allow_partial else
                     'strict', args.checkpoint)
    scope = cfg.get('default_scope')
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.tta:
        enable_tta(cfg)
    if args.out and scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    elif args.out and not args.out.endswith(('.pkl', '.pickle')):
        fail(f'--out must be a .pkl file for {scope} configs, got '
             f'{args.out}')
    check_dataset_paths(cfg, ['test_dataloader'])
    setup_cpu_distributed(cfg, args.launcher)
    runner = (exported_runner(cfg, args) if args.backend else
              build_runner(cfg))
    if args.out and scope != 'mmseg':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(
            DumpDetResults(out_file_path=args.out))
    with checkpoint_errors():
        return runner.test()


if __name__ == '__main__':
    main()
