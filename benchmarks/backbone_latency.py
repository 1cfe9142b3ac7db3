"""Backbone forward latency: mmswin (SDPA and math attention) vs mmdet's
``SwinTransformer`` vs HF transformers' ``SwinModel``, same Swin-T weights,
one process, interleaved repeats.

    python benchmarks/backbone_latency.py [--device cuda] [--dtype all]
        [--runs 3]

Prints one table per precision (median seconds, ratio to mmdet's, spread)
and writes ``benchmarks/results/backbone_latency.json``. The outputs of
every implementation are compared once per size (max abs diff to mmdet's),
so the timings are known to be of the same computation. A 4096^3 matmul
is timed in the same interleaved repeats (``--matmul-size``; 0 leaves it
out): its GFLOP/s is the machine's speed at the time. ``--runs N`` repeats
everything in N fresh processes and reports the median and min-max over
them, with a warning where the machine was busy.
"""
import argparse
import sys
from typing import Dict, List

import torch
from backbones import (
    BASELINE,
    IMPLEMENTATIONS,
    build_backbones,
    forward_fn,
    max_output_diff,
)
from common import (
    add_common_args,
    add_matmul_arg,
    autocast,
    dtype_names,
    format_table,
    machine,
    parse_size,
    report_runs,
    setup,
    size_name,
    summarize,
    time_with_matmul,
    write_json,
)

SIZES = ['1x3x800x1344', '2x3x512x512', '8x3x224x224', '1x3x1600x2688']


def latency_rows(models: Dict[str, torch.nn.Module], size: tuple,
                 device: torch.device, dtype_name: str,
                 args: argparse.Namespace) -> List[dict]:
    """Time every model on one input size; one result dict per model."""
    x = torch.randn(*size, device=device)
    fns = {name: forward_fn(name, model) for name, model in models.items()}
    with torch.inference_mode(), autocast(device, dtype_name):
        outs = {name: fn(x) for name, fn in fns.items()}
        reference = outs.get(BASELINE)
        times, matmul = time_with_matmul(
            {name: (lambda fn=fn: fn(x)) for name, fn in fns.items()},
            device, args)
    base = summarize(times[BASELINE])['median_s'] if BASELINE in times \
        else None
    rows = []
    for name, runs in times.items():
        stats = summarize(runs)
        if matmul and name == matmul[0]:
            rows.append(dict(impl=name, size=size_name(size),
                             dtype=dtype_name, **stats,
                             gflops_per_s=matmul[1] / stats['median_s'] / 1e9,
                             speedup_vs_mmdet=None,
                             max_abs_diff_vs_mmdet=None))
            continue
        rows.append(dict(
            impl=name, size=size_name(size), dtype=dtype_name, **stats,
            speedup_vs_mmdet=base / stats['median_s'] if base else None,
            max_abs_diff_vs_mmdet=None if reference is None else
            max_output_diff(reference, outs[name])))
    return rows


def pixel_scaling(rows: List[dict], small: str = '1x3x800x1344',
                  large: str = '1x3x1600x2688') -> List[dict]:
    """How time grows from ``small`` to ``large`` (4x the pixels), per
    implementation and precision, when both sizes were run."""
    times = {(r['dtype'], r['impl'], r['size']): r['median_s'] for r in rows}
    pixels = (parse_size(large)[2] * parse_size(large)[3]) / (
        parse_size(small)[2] * parse_size(small)[3])
    return [dict(dtype=dtype, impl=impl, sizes=f'{large} / {small}',
                 pixels_ratio=pixels,
                 time_ratio=times[(dtype, impl, large)] / seconds)
            for (dtype, impl, size), seconds in times.items()
            if size == small and (dtype, impl, large) in times
            and not impl.startswith('matmul')]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=SIZES, type=str,
                        help='input sizes BxCxHxW')
    parser.add_argument('--impls', nargs='+', default=list(IMPLEMENTATIONS),
                        choices=IMPLEMENTATIONS)
    add_matmul_arg(parser)
    args = add_common_args(parser).parse_args(argv)
    if args.runs > 1:
        return report_runs('backbone_latency', __file__,
                           sys.argv[1:] if argv is None else argv, args,
                           ['speedup_vs_mmdet'])
    device = setup(args)
    sizes = [parse_size(s) for s in args.sizes]
    models = build_backbones(args.impls, device=device)
    rows: List[dict] = []
    for dtype_name in dtype_names(args):
        for size in sizes:
            rows += latency_rows(models, size, device, dtype_name, args)
            print(f'done {size_name(size)} {dtype_name}', file=sys.stderr)
    table = format_table(
        ['size', 'dtype', 'impl', 'median s', 'speed-up vs mmdet', 'spread',
         'CPU s', 'max abs diff', 'GFLOP/s'],
        [(r['size'], r['dtype'], r['impl'], r['median_s'],
          r['speedup_vs_mmdet'], r['spread'], r['cpu_median_s'],
          r['max_abs_diff_vs_mmdet'], r.get('gflops_per_s'))
         for r in rows])
    scaling = pixel_scaling(rows)
    if scaling:
        table += '\n\n' + format_table(
            ['dtype', 'impl', 'sizes', 'pixels ratio', 'time ratio'],
            [(r['dtype'], r['impl'], r['sizes'], r['pixels_ratio'],
              r['time_ratio']) for r in scaling])
    print(table)
    payload = dict(benchmark='backbone_latency', machine=machine(device),
                   args=vars(args), rows=rows, scaling=scaling, table=table)
    print('wrote', write_json('backbone_latency', payload, args.out))
    return payload


if __name__ == '__main__':
    main()
