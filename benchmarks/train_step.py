"""Training step (forward + backward) time and peak memory of the backbone:
mmswin vs mmdet's ``SwinTransformer``, with and without ``with_cp``.

    python benchmarks/train_step.py [--device cuda] [--dtype all] [--runs 3]

Same Swin-T weights, train mode, drop-path off; the loss is the mean
square of every output, so each output gets a dense gradient. Times are
interleaved medians, with a 4096^3 matmul timed in the same repeats (its
GFLOP/s is the machine's speed at the time; ``--matmul-size 0`` leaves it
out); peak memory is measured in a separate untimed step (tensor bytes
above those alive before the step: the CUDA allocator's peak, or on CPU
the profiler's allocation events). ``--runs N`` repeats everything in N
fresh processes and reports the median and min-max over them. Writes
``benchmarks/results/train_step.json``.
"""
import argparse
import sys
from typing import Callable, Dict, List

import torch
from backbones import build_backbones
from common import (
    add_common_args,
    add_matmul_arg,
    autocast,
    dtype_names,
    format_table,
    machine,
    parse_size,
    peak_memory_bytes,
    report_runs,
    setup,
    size_name,
    summarize,
    time_with_matmul,
    write_json,
)

SIZES = ['1x3x800x1344', '2x3x512x512']
IMPLS = ('mmswin-sdpa', 'mmdet')


def train_step_fn(model: torch.nn.Module, x: torch.Tensor,
                  device: torch.device,
                  dtype_name: str) -> Callable[[], None]:
    """One forward + backward; gradients are freed afterwards so every
    step allocates them anew."""

    def step() -> None:
        with autocast(device, dtype_name):
            outs = model(x)
            loss = sum(o.float().pow(2).mean() for o in outs)
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=SIZES)
    parser.add_argument('--impls', nargs='+', default=list(IMPLS),
                        choices=['mmswin-sdpa', 'mmswin-math',
                                 'mmswin-plain', 'mmdet'])
    add_matmul_arg(parser)
    args = add_common_args(parser).parse_args(argv)
    if args.runs > 1:
        return report_runs('train_step', __file__, argv, args,
                           ['speedup_vs_mmdet', 'peak_mib',
                            'memory_vs_mmdet'])
    device = setup(args)
    models: Dict[str, torch.nn.Module] = {}
    for with_cp in (False, True):
        for name, model in build_backbones(args.impls, with_cp=with_cp,
                                           device=device).items():
            model.train()
            models[f'{name}{" +cp" if with_cp else ""}'] = model
    rows: List[dict] = []
    for dtype_name in dtype_names(args):
        for size in map(parse_size, args.sizes):
            x = torch.randn(*size, device=device)
            steps = {name: train_step_fn(model, x, device, dtype_name)
                     for name, model in models.items()}
            times, matmul = time_with_matmul(steps, device, args)
            base = summarize(times['mmdet'])['median_s'] if 'mmdet' in \
                times else None
            base_mem = None
            for name, step in steps.items():
                peak = peak_memory_bytes(step, device)
                stats = summarize(times[name])
                if name == 'mmdet':
                    base_mem = peak
                rows.append(dict(
                    impl=name, size=size_name(size), dtype=dtype_name,
                    **stats, peak_mib=peak / 2**20,
                    speedup_vs_mmdet=base / stats['median_s'] if base
                    else None))
            for row in rows[-len(steps):]:
                row['memory_vs_mmdet'] = (row['peak_mib'] * 2**20 / base_mem
                                          if base_mem else None)
            if matmul:
                stats = summarize(times[matmul[0]])
                rows.append(dict(
                    impl=matmul[0], size=size_name(size),
                    dtype=dtype_name, **stats, peak_mib=None,
                    speedup_vs_mmdet=None, memory_vs_mmdet=None,
                    gflops_per_s=matmul[1] / stats['median_s'] / 1e9))
            print(f'done {size_name(size)} {dtype_name}', file=sys.stderr)
    table = format_table(
        ['size', 'dtype', 'impl', 'median s', 'speed-up vs mmdet', 'spread',
         'CPU s', 'peak MiB', 'memory vs mmdet', 'GFLOP/s'],
        [(r['size'], r['dtype'], r['impl'], r['median_s'],
          r['speedup_vs_mmdet'], r['spread'], r['cpu_median_s'],
          r['peak_mib'], r['memory_vs_mmdet'], r.get('gflops_per_s'))
         for r in rows])
    print(table)
    payload = dict(benchmark='train_step', machine=machine(device),
                   args=vars(args), rows=rows, table=table)
    print('wrote', write_json('train_step', payload, args.out))
    return payload


if __name__ == '__main__':
    main()
