"""Two-process DDP (gloo, CPU) with frozen stages and no unused-parameter
search: ``frozen_stages=2`` with ``find_unused_parameters=False`` trains
without DDP's "parameters that were not used in producing loss" error, and
both ranks end with identical weights.

The control re-enables gradients on a module that takes no part in the
loss (the patch merging after the last output), which is what makes DDP
fail in the reports (mmdet 8724, 8258, 10157): the same run must then
raise that error, so the test can tell the two apart.
"""
import os.path as osp
from typing import Dict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from helpers import free_port
from torch.nn.parallel import DistributedDataParallel

from mmswin.models import SwinTransformer

WORLD_SIZE = 2
STEPS = 3
ARCH = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))
CASES = {
    'all_outputs': dict(out_indices=(0, 1, 2, 3)),
    'last_outputs': dict(out_indices=(2, 3)),
    'with_cp': dict(out_indices=(1, 2, 3), with_cp=True),
    'before_last_stage': dict(out_indices=(0, 1, 2)),
}


class Detector(nn.Module):
    """Backbone plus a 1x1-conv head on every output, like a neck."""

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.backbone = SwinTransformer(arch=ARCH, window_size=2,
                                        frozen_stages=2, drop_path_rate=0.1,
                                        **kwargs)
        self.heads = nn.ModuleList(
            nn.Conv2d(16 * 2**i, 4, 1) for i in self.backbone.out_indices)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        return sum(head(f).pow(2).mean() for head, f in zip(self.heads, feats))


def _train(rank: int, case: str, control: bool) -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)  # same initial weights on both ranks
    model = Detector(**CASES[case])
    if control:  # the merging after the last output is never used
        model.backbone.layers[2].downsample.requires_grad_(True)
    ddp = DistributedDataParallel(model, find_unused_parameters=False)
    optim = torch.optim.AdamW(
        [p for p in ddp.parameters() if p.requires_grad], lr=1e-2)
    gen = torch.Generator().manual_seed(100 + rank)  # different data
    for _ in range(STEPS):
        optim.zero_grad()
        ddp(torch.randn(2, 3, 20, 28, generator=gen)).backward()
        optim.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    try:
        results = {}
        for case in CASES:
            results[case] = _train(rank, case, control=False)
        try:
            _train(rank, 'before_last_stage', control=True)
            results['control_error'] = ''
        except RuntimeError as err:
            results['control_error'] = str(err)
        torch.save(results, osp.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    out_dir = str(tmp_path_factory.mktemp('ddp'))
    mp.spawn(_worker, args=(free_port(), out_dir), nprocs=WORLD_SIZE,
             join=True)
    return [torch.load(osp.join(out_dir, f'rank{r}.pth'))
            for r in range(WORLD_SIZE)]


@pytest.mark.parametrize('case', sorted(CASES))
def test_frozen_ddp_ranks_end_identical(ranks, case):
    first, second = (r[case] for r in ranks)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    # the trainable part did train; the frozen stages did not move
    torch.manual_seed(0)
    start = Detector(**CASES[case]).state_dict()
    frozen = ('backbone.patch_embed.', 'backbone.layers.0.',
              'backbone.layers.1.', 'backbone.norm0.', 'backbone.norm1.')
    for key, value in first.items():
        moved = not torch.equal(value, start[key])
        if key.startswith(frozen):
            assert not moved, key
    assert not torch.equal(first['heads.0.weight'], start['heads.0.weight'])
    assert not torch.equal(first['backbone.layers.2.blocks.0.mlp.fc1.weight'],
                           start['backbone.layers.2.blocks.0.mlp.fc1.weight'])


def test_control_unused_parameter_is_an_error(ranks):
    for rank in ranks:
        assert 'did not receive grad' in rank['control_error'] or (
            'not used in producing loss' in rank['control_error']), \
            rank['control_error']
