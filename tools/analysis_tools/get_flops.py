"""Parameters and FLOPs of an mmdet or mmseg config's model.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H [W]]
        [--checkpoint FILE [--allow-partial]] [--cfg-options KEY=VALUE ...]
        [--show-table]

The model is built from the config (the backbone's ``init_cfg`` is not run;
``--checkpoint`` loads weights, refused unless they fit the model, which
matters where the count depends on them: a detector's proposals) and run in
test mode ("tensor" mode, as mmdet's and mmseg's own get_flops) on one
random image of ``H x W`` (default 1280 x 800 for mmdet, 2048 x 1024 for
mmseg, as their tools). FLOPs are counted as the Swin papers count them,
one per multiply-accumulate, by torch's ``FlopCounterMode`` at the
dispatcher (so any Python control flow works): convolutions (transposed
too), matmuls / linear layers and scaled-dot-product attention (fused or
not). Norms, activations, softmax, elementwise ops, RoIAlign and NMS are
not counted.
"""
import argparse
import os.path as osp
import sys
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from checkpoint_utils import add_allow_partial, load_checked  # noqa: E402
from tool_utils import (  # noqa: E402
    DictAction,
    check_checkpoint,
    fail,
    load_config,
)

DEFAULT_SHAPES = {'mmdet': (1280, 800), 'mmseg': (2048, 1024)}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Count params and FLOPs')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+',
                        help='input H W (or one side for a square); '
                        'default 1280 800 (mmdet), 2048 1024 (mmseg)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    parser.add_argument('--show-table', action='store_true',
                        help='print the per-module table')
    parser.add_argument('--checkpoint', help='weights to load (default: '
                        'random)')
    add_allow_partial(parser, 'count')
    return parser.parse_args(argv)


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args,
                    out_shape=None, **kwargs) -> int:
    """FLOPs (2 per multiply-accumulate) of the CPU fused attention kernel,
    which torch's table lacks: ``q @ k^T`` plus ``attn @ v``."""
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def flop_counter(display: bool = False):
    """A ``FlopCounterMode`` that also counts the CPU SDPA kernel."""
    from torch.utils.flop_counter import FlopCounterMode
    cpu_sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return FlopCounterMode(display=display,
                           custom_mapping={cpu_sdpa: _sdpa_cpu_flops})


def _sample_type(scope: str):
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return DetDataSample
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample
        return SegDataSample
    fail(f'get_flops supports mmdet and mmseg configs, got default_scope='
         f'{scope!r}')


def build_model_and_inputs(cfg, shape: Sequence[int]) -> Tuple[
        torch.nn.Module, torch.Tensor]:
    """The config's model in eval mode, its ``forward`` bound to the data
    samples of one random ``shape`` image, and the preprocessed input
    ``(1, 3, H', W')`` (padded as the data_preprocessor pads)."""
    from mmengine.registry import MODELS, init_default_scope
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    sample_type = _sample_type(scope)
    model = MODELS.build(cfg.model).eval()
    height, width = shape
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), scale_factor=(1.0, 1.0))
    batch = dict(
        inputs=[torch.randint(0, 256, (3, height, width), dtype=torch.uint8)],
        data_samples=[sample_type(metainfo=meta)])
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
    # Tensor mode; two-stage detectors still need the image metas.
    model.forward = partial(model.forward, data_samples=data['data_samples'],
                            mode='tensor')
    return model, data['inputs']


def count(model: torch.nn.Module, inputs: torch.Tensor,
          show_table: bool = False) -> Dict[str, Any]:
    """Returns ``params``, ``flops`` (multiply-accumulates), ``by_op``
    (MACs per aten op) and, with ``show_table``, the per-module ``table``.
    """
    counter = flop_counter()
    with counter, torch.no_grad():
        model(inputs)
    by_op = {str(op): macs // 2 for op, macs in
             counter.get_flop_counts()['Global'].items()}
    return dict(params=sum(p.numel() for p in model.parameters()),
                flops=counter.get_total_flops() // 2, by_op=by_op,
                table=_module_table(counter) if show_table else '')


def _module_table(counter, depth: int = 3) -> str:
    """Multiply-accumulates per module, down to ``depth`` levels."""
    rows = []
    for name, by_op in sorted(counter.get_flop_counts().items()):
        if name != 'Global' and name.count('.') < depth:
            rows.append((name, sum(by_op.values()) // 2))
    width = max(len(name) for name, _ in rows)
    return '\n'.join(f'{name:<{width}}  {macs / 1e9:10.3f} G'
                     for name, macs in rows)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Print and return the counts of :func:`count` plus the ``shape``."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    scope = cfg.get('default_scope', 'mmdet')
    shape = args.shape or DEFAULT_SHAPES.get(scope, (1280, 800))
    if len(shape) == 1:
        shape = (shape[0], shape[0])
    if len(shape) != 2 or min(shape) < 32:
        fail(f'--shape takes H [W] of at least 32 px, got {args.shape}')
    if args.checkpoint:
        check_checkpoint(args.checkpoint)
    model, inputs = build_model_and_inputs(cfg, tuple(shape))
    if args.checkpoint:
        load_checked(model, args.checkpoint, args.allow_partial, 'count')
    result = count(model, inputs, args.show_table)
    result['shape'] = tuple(inputs.shape[-2:])
    if result['table']:
        print(result['table'])
    padded = ''
    if result['shape'] != tuple(shape):
        padded = ', padded to {} x {}'.format(*result['shape'])
    print(f'{"=" * 30}\nInput shape: {shape[0]} x {shape[1]} (H x W)'
          f'{padded}'
          f'\nFlops: {result["flops"] / 1e9:.1f} G (multiply-accumulates)'
          f'\nParams: {result["params"] / 1e6:.2f} M\n{"=" * 30}')
    print('Counted: ' + ', '.join(
        f'{op} {macs / 1e9:.1f}G' for op, macs in result['by_op'].items()))
    return result


if __name__ == '__main__':
    main()
