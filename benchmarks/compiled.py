"""``torch.compile`` (inductor) against eager, for mmswin and for mmdet:
what a user would pick instead of mmswin's eager CPU fast path.

    python benchmarks/compiled.py [--device cuda] [--mmdet-dynamic] [--runs 3]

Same Swin-T weights in every model; compiled mmswin traces its plain path
(the CPU fast path switches itself off under compile), once with static
shapes and once with ``dynamic=True`` (one compile for every input size);
mmdet's backbone static (``--mmdet-dynamic`` adds its dynamic compile,
which mmdet's size-dependent Python padding makes slow). Reports the compile
time (the first call), median forward time, the ratio to mmdet's eager and
compiled forward, the fraction of the matmul limit timed in the same run,
and the max abs diff of every output to mmdet's eager output. Writes
``benchmarks/results/compiled.json``. ``--runs N`` repeats everything
(compiles included) in N fresh processes and reports the median and
min-max over them, with the matmul's GFLOP/s of each run.
"""
import argparse
import copy
import sys
import time
from typing import List

import torch
from backbones import build_backbones, forward_fn, max_output_diff
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
    synchronize,
    time_interleaved,
    write_json,
)
from flops_efficiency import count_flops

SIZES = ['1x3x800x1344']
EAGER = ('mmswin-sdpa', 'mmdet')


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=SIZES)
    parser.add_argument('--mmdet-dynamic', action='store_true',
                        help='also compile mmdet with dynamic=True')
    parser.add_argument('--skip-dynamic', action='store_true',
                        help="leave out mmswin's dynamic=True compile (the "
                        'longest), e.g. for several --runs')
    parser.add_argument('--matmul-size', type=int, default=None)
    args = add_common_args(parser).parse_args(argv)
    if args.runs > 1:
        return report_runs('compiled', __file__,
                           sys.argv[1:] if argv is None else argv, args,
                           ['vs_mmdet_eager', 'vs_mmdet_compiled'])
    device = setup(args)
    side = args.matmul_size or (8192 if device.type == 'cuda' else 4096)
    models = build_backbones(['mmswin-math', *EAGER], device=device)
    mm, mm_flops = matmul_fn(device, side)
    rows: List[dict] = []
    for dtype_name in dtype_names(args):
        for size in map(parse_size, args.sizes):
            torch._dynamo.reset()
            x = torch.randn(*size, device=device)
            work = count_flops(models['mmswin-math'], x)
            fns = {f'matmul {side}^3': mm}
            compile_s = {}
            with torch.inference_mode(), autocast(device, dtype_name):
                reference = models['mmdet'](x)
                outs = {}
                for name in EAGER:
                    fns[name] = lambda m=models[name], x=x: m(x)
                    outs[name] = forward_fn(name, models[name])(x)
                variants = [('mmswin-sdpa', False), ('mmswin-sdpa', True),
                            ('mmdet', False)]
                if args.skip_dynamic:
                    variants.remove(('mmswin-sdpa', True))
                if args.mmdet_dynamic:
                    variants.append(('mmdet', True))
                for name, dynamic in variants:
                    label = f'{name} compiled' + (' dynamic' if dynamic
                                                  else '')
                    # dynamo caches compiled code per module instance: a
                    # copy gets a compile of its own instead of reusing
                    # the static one.
                    model = (copy.deepcopy(models[name]) if dynamic else
                             models[name])
                    compiled = torch.compile(model, dynamic=dynamic)
                    start = time.perf_counter()
                    outs[label] = compiled(x)
                    synchronize(device)
                    compile_s[label] = time.perf_counter() - start
                    fns[label] = lambda c=compiled, x=x: c(x)
                times = time_interleaved(fns, device, args.repeats,
                                         args.warmup)
            limit = mm_flops / summarize(times[f'matmul {side}^3'])[
                'median_s']
            base = {name: summarize(times[name])['median_s']
                    for name in ('mmdet', 'mmdet compiled')}
            for name, runs in times.items():
                stats = summarize(runs)
                is_mm = name.startswith('matmul')
                achieved = (mm_flops if is_mm else work) / stats['median_s']
                rows.append(dict(
                    impl=name, size=size_name(size), dtype=dtype_name,
                    **stats, compile_s=compile_s.get(name),
                    vs_mmdet_eager=base['mmdet'] / stats['median_s'],
                    vs_mmdet_compiled=base['mmdet compiled'] /
                    stats['median_s'],
                    fraction_of_matmul=achieved / limit,
                    gflops_per_s=achieved / 1e9 if is_mm else None,
                    max_abs_diff_vs_mmdet=None if is_mm else
                    max_output_diff(reference, outs[name])))
            print(f'done {size_name(size)} {dtype_name}', file=sys.stderr)
    table = format_table(
        ['size', 'dtype', 'impl', 'compile s', 'median s', 'spread',
         'vs mmdet eager', 'vs mmdet compiled', 'of matmul limit',
         'max abs diff'],
        [(r['size'], r['dtype'], r['impl'], r['compile_s'], r['median_s'],
          r['spread'], r['vs_mmdet_eager'], r['vs_mmdet_compiled'],
          r['fraction_of_matmul'], r['max_abs_diff_vs_mmdet'])
         for r in rows])
    print(table)
    payload = dict(benchmark='compiled', machine=machine(device),
                   args=vars(args), rows=rows, table=table)
    print('wrote', write_json('compiled', payload, args.out))
    return payload


if __name__ == '__main__':
    main()
