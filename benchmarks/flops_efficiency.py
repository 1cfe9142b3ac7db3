"""Achieved FLOP/s of the backbone forward as a fraction of the machine's
practical limit: a large matmul timed in the same run.

    python benchmarks/flops_efficiency.py [--device cuda] [--dtype all]
        [--runs 3]

The work of a forward is counted once per size by
``torch.utils.flop_counter.FlopCounterMode`` on mmswin's math-attention
path (linears, convolution and the attention matmuls; padded windows'
attention included, padded tokens' MLP not, since no implementation needs
them); every implementation is credited with that same work, so the
fractions compare speed, not bookkeeping. ``--runs N`` repeats everything
in N fresh processes and reports the median and min-max over them. Writes
``benchmarks/results/flops_efficiency.json``.
"""
import argparse
import sys
from typing import List

import torch
from backbones import IMPLEMENTATIONS, build_backbones, forward_fn
from common import (
    add_common_args,
    autocast,
    dtype_names,
    format_table,
    machine,
    matmul_fn,
    parse_size,
    report_runs,
    setup,
    size_name,
    summarize,
    time_interleaved,
    write_json,
)
from torch.utils.flop_counter import FlopCounterMode

SIZES = ['1x3x800x1344']


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs (2 per multiply-add) of one forward of ``model``."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=SIZES)
    parser.add_argument('--impls', nargs='+',
                        default=['mmswin-sdpa', 'mmdet'],
                        choices=IMPLEMENTATIONS)
    parser.add_argument('--matmul-size', type=int, default=None,
                        help='side of the reference matmul (default 4096 '
                        'on CPU, 8192 on CUDA)')
    args = add_common_args(parser).parse_args(argv)
    if args.runs > 1:
        return report_runs('flops_efficiency', __file__, argv, args,
                           ['fraction_of_matmul'])
    device = setup(args)
    side = args.matmul_size or (8192 if device.type == 'cuda' else 4096)
    names = list(dict.fromkeys(['mmswin-math', *args.impls]))
    models = build_backbones(names, device=device)
    mm, mm_flops = matmul_fn(device, side)
    rows: List[dict] = []
    for dtype_name in dtype_names(args):
        for size in map(parse_size, args.sizes):
            x = torch.randn(*size, device=device)
            work = count_flops(models['mmswin-math'], x)
            fns = {f'matmul {side}^3': mm}
            for name in args.impls:
                fn = forward_fn(name, models[name])
                fns[name] = lambda fn=fn, x=x: fn(x)
            with torch.inference_mode(), autocast(device, dtype_name):
                times = time_interleaved(fns, device, args.repeats,
                                         args.warmup)
            limit = mm_flops / summarize(times[f'matmul {side}^3'])[
                'median_s']
            for name, runs in times.items():
                stats = summarize(runs)
                flops = mm_flops if name.startswith('matmul') else work
                achieved = flops / stats['median_s']
                rows.append(dict(impl=name, size=size_name(size),
                                 dtype=dtype_name, flops=flops, **stats,
                                 gflops_per_s=achieved / 1e9,
                                 fraction_of_matmul=achieved / limit))
            print(f'done {size_name(size)} {dtype_name}', file=sys.stderr)
    table = format_table(
        ['size', 'dtype', 'impl', 'GFLOP', 'median s', 'spread', 'GFLOP/s',
         'of matmul limit'],
        [(r['size'], r['dtype'], r['impl'], r['flops'] / 1e9, r['median_s'],
          r['spread'], r['gflops_per_s'], r['fraction_of_matmul'])
         for r in rows])
    print(table)
    payload = dict(benchmark='flops_efficiency', machine=machine(device),
                   args=vars(args), rows=rows, table=table)
    print('wrote', write_json('flops_efficiency', payload, args.out))
    return payload


if __name__ == '__main__':
    main()
