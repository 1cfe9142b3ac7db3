"""Parameters and FLOPs of an mmdet or mmseg config's model.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H [W]]
        [--cfg-options KEY=VALUE ...] [--show-table]

The model is built from the config (no checkpoint is loaded, the backbone's
``init_cfg`` is not run) and traced in test mode on one random image of
``H x W`` (default 1280 x 800 for mmdet, 2048 x 1024 for mmseg, as their
own tools). FLOPs are counted as fvcore and mmengine count them: one per
multiply-accumulate of convolutions, linear layers, matmuls and
(added here) scaled-dot-product attention, plus the small norm /
upsample terms; RoIAlign, NMS, softmax and elementwise ops are not counted
and are listed as such.
"""
import argparse
import os.path as osp
import sys
import warnings
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tool_utils import DictAction, fail, load_config  # noqa: E402

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
    return parser.parse_args(argv)


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of ``scaled_dot_product_attention(q, k, v)``: ``q @ k^T`` and
    ``attn @ v``, for q ``(..., L, d)``, k ``(..., S, d)``, v
    ``(..., S, dv)``."""
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(value) for value in inputs[:3])
    batch = 1
    for size in q[:-2]:
        batch *= size
    length, depth = q[-2], q[-1]
    return batch * length * k[-2] * (depth + v[-1])


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
    """Returns ``params``, ``flops`` (MACs), ``uncounted`` op names and,
    with ``show_table``, the per-module ``table``."""
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.analysis.print_helper import complexity_stats_table
    analyzer = FlopAnalyzer(model, (inputs, ))
    analyzer.set_op_handle(
        'aten::scaled_dot_product_attention', sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # tracer warnings on dynamic code
        flops = analyzer.total()
        uncounted = sorted(analyzer.unsupported_ops())
        table = complexity_stats_table(analyzer) if show_table else ''
    return dict(params=parameter_count(model)[''], flops=flops,
                uncounted=uncounted, table=table)


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
    model, inputs = build_model_and_inputs(cfg, tuple(shape))
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
    if result['uncounted']:
        print('Not counted: ' + ', '.join(result['uncounted']))
    return result


if __name__ == '__main__':
    main()
