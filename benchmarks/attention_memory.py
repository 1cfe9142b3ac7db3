"""How much of a SwinV2 backbone's training memory window attention's
N x N tensors take (N = window_size**2 tokens): the position-bias mask
expanded per window, the logits, the softmax and their gradients.

    python benchmarks/attention_memory.py [--arch giant] [--size 1536]
        [--batch 1] [--window 16] [--depths 2,2,42,4] [--amp] [--with-cp]

The memory planner (tools/analysis_tools/estimate_memory.py) traces one
training step of the backbone on fake tensors twice: as it is, and with
each WindowAttention's forward replaced by a stand-in that takes the same
q, k, v and position bias and returns a tensor of the output's shape
without any N x N tensor. The difference is what attention's N x N
tensors add to the peak; the paper's sequential (chunked) window attention
could remove at most that. Nothing is allocated, so it runs on any CPU.
"""
import argparse
import importlib.util
import os.path as osp
from typing import List, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GIB = 2**30


def _planner():
    path = osp.join(ROOT, 'tools', 'analysis_tools', 'estimate_memory.py')
    spec = importlib.util.spec_from_file_location('estimate_memory', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _no_square_forward(self, x: torch.Tensor,
                       shift_mask: Optional[torch.Tensor] = None
                       ) -> torch.Tensor:
    """WindowAttention's inputs and output shape, no N x N tensor: the
    output is v, with q, k and the (scalar-summed) position bias kept in
    the graph so their parameters still get gradients."""
    q, k, v = self.split_heads(self.project(x))
    out = v + (q + k) * (0 * self.position_bias().sum())
    return self.proj_drop(self.proj(self.merge_heads(out)))


def _loss(model, x: torch.Tensor) -> torch.Tensor:
    return sum(o.float().mean() for o in model(x))


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='giant')
    parser.add_argument('--size', type=int, default=1536)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--window', type=int, default=16)
    parser.add_argument('--depths', help='blocks per stage, e.g. 2,2,2,2 '
                        '(default: the preset\'s)')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--with-cp', action='store_true')
    args = parser.parse_args(argv)
    from mmswin.models import SwinTransformerV2
    from mmswin.models.layers.attention import WindowAttention
    planner = _planner()
    arch = dict(SwinTransformerV2.arch_settings[args.arch])
    if args.depths:
        arch['depths'] = tuple(int(d) for d in args.depths.split(','))
    shape = (args.batch, 3, args.size, args.size)
    optim = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    traces = {}
    for variant in ('attention', 'no N x N'):
        with torch.device('meta'):
            model = SwinTransformerV2(arch=arch,
                                      window_size=args.window,
                                      with_cp=args.with_cp,
                                      cpu_fast_path=False)
        forward = WindowAttention.forward
        if variant != 'attention':
            WindowAttention.forward = _no_square_forward
        try:
            traces[variant] = planner.trace_step(model, shape, _loss, optim,
                                                 amp=args.amp)
        finally:
            WindowAttention.forward = forward
    full, rest = traces['attention'], traces['no N x N']
    print(f'SwinV2-{args.arch} backbone, depths {arch["depths"]}, '
          f'window {args.window}, '
          f'{args.batch} x 3 x {args.size} x {args.size}, '
          f'amp={args.amp}, with_cp={args.with_cp}; GiB')
    print(f'{"variant":<12}{"params":>8}{"grads":>8}{"optim":>8}'
          f'{"activ.":>8}{"peak":>8}')
    for name, t in traces.items():
        print(f'{name:<12}' + ''.join(f'{v / GIB:>8.2f}' for v in (
            t.params, t.grads, t.optim, t.activations, t.peak)))
    share = 1 - rest.activations / full.activations
    print(f'attention N x N tensors: {share:.0%} of the activations, '
          f'{1 - rest.peak / full.peak:.0%} of the peak')
    return traces


if __name__ == '__main__':
    main()
