"""Where a backbone forward (or training step) spends its time, by op.

    python benchmarks/profile_backbone.py --impls mmswin-sdpa mmdet \
        --size 1x3x800x1344 [--train]

Runs each implementation under ``torch.profiler`` once after a warm-up and
prints the heaviest ops by self time plus a summary by kind (matmuls, the
attention kernel, copies and gathers, LayerNorm, GELU, element-wise), as
shares of the total; writes ``benchmarks/results/profile_backbone.json``.
"""
import argparse
from collections import defaultdict
from typing import Dict, List

import torch
from backbones import IMPLEMENTATIONS, build_backbones, forward_fn
from common import (
    add_common_args,
    autocast,
    dtype_names,
    format_table,
    machine,
    parse_size,
    setup,
    write_json,
)
from torch.profiler import ProfilerActivity, profile

# Op name fragments -> kind; the first match wins.
KINDS = [
    ('matmul', ('addmm', 'aten::mm', 'bmm', 'matmul', 'linear', 'conv')),
    ('attention kernel', ('scaled_dot_product', 'flash', 'efficient_att',
                          'softmax')),
    ('copy / gather / pad', ('copy', 'index', 'roll', 'cat', 'pad',
                             'clone', 'contiguous', 'scatter', 'gather',
                             'col2im', 'im2col', 'unfold')),
    ('layer norm', ('layer_norm', )),
    ('gelu', ('gelu', )),
    ('element-wise', ('add', 'mul', 'div', 'fill', 'masked', 'where',
                      'zero', 'sum', 'normalize', 'norm')),
]


def kind_of(op: str) -> str:
    """The kind of a profiler op name (``'other'`` if none matches)."""
    for kind, fragments in KINDS:
        if any(f in op for f in fragments):
            return kind
    return 'other'


def profile_one(fn, device: torch.device, top: int) -> Dict[str, object]:
    """Self time per op of one call of ``fn`` (after one warm-up)."""
    fn()
    activities = [ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
    attr = 'self_device_time_total' if device.type == 'cuda' else \
        'self_cpu_time_total'
    ops = [(e.key, getattr(e, attr) / 1e6, e.count)
           for e in prof.key_averages()]
    ops = [op for op in ops if op[1] > 0]
    total = sum(t for _, t, _ in ops)
    by_kind: Dict[str, float] = defaultdict(float)
    for name, seconds, _ in ops:
        by_kind[kind_of(name)] += seconds
    ops.sort(key=lambda op: -op[1])
    return dict(total_s=total,
                kinds={k: dict(seconds=s, share=s / total)
                       for k, s in sorted(by_kind.items(),
                                          key=lambda kv: -kv[1])},
                top_ops=[dict(op=n, seconds=s, share=s / total, calls=c)
                         for n, s, c in ops[:top]])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=parse_size,
                        default=parse_size('1x3x800x1344'))
    parser.add_argument('--impls', nargs='+', default=['mmswin-sdpa',
                                                       'mmdet'],
                        choices=IMPLEMENTATIONS)
    parser.add_argument('--train', action='store_true',
                        help='profile forward + backward instead')
    parser.add_argument('--top', type=int, default=15)
    args = add_common_args(parser, repeats=1).parse_args(argv)
    device = setup(args)
    models = build_backbones(args.impls, device=device)
    x = torch.randn(*args.size, device=device)
    results: List[dict] = []
    for dtype_name in dtype_names(args):
        for name, model in models.items():
            fn = forward_fn(name, model)

            def step(fn=fn, model=model, dtype_name=dtype_name):
                with autocast(device, dtype_name):
                    if not args.train:
                        with torch.inference_mode():
                            return fn(x)
                    model.train()
                    loss = sum(o.float().mean() for o in fn(x))
                loss.backward()
                model.zero_grad(set_to_none=True)

            result = profile_one(step, device, args.top)
            results.append(dict(impl=name, dtype=dtype_name, **result))
            print(f'\n## {name} {dtype_name} '
                  f"{'train step' if args.train else 'forward'}: "
                  f"{result['total_s']:.3f} s profiled")
            print(format_table(
                ['kind', 'seconds', 'share'],
                [(k, v['seconds'], v['share'])
                 for k, v in result['kinds'].items()]))
            print(format_table(
                ['op', 'calls', 'seconds', 'share'],
                [(o['op'], o['calls'], o['seconds'], o['share'])
                 for o in result['top_ops']]))
    payload = dict(benchmark='profile_backbone', machine=machine(device),
                   args={**vars(args), 'size': list(args.size)},
                   results=results)
    print('wrote', write_json('profile_backbone', payload, args.out))
    return payload


if __name__ == '__main__':
    main()
