"""Which forward hooks on a block's modules run, with the CPU fast path on
and off (README: hooks on ``qkv``, ``proj``, ``fc1`` or ``fc2`` run only
with ``cpu_fast_path=False``, never on V2's ``qkv``; ``fc1``'s output is
after its fused GELU).

With the fast path on, a stage runs its blocks through their weights and
their ``residual`` formula, so besides those four the hooks on the block
itself, its ``attn``, ``mlp``, ``drop_path`` and ``mlp.drop`` do not run
either; ``norm1``, ``norm2``, ``proj_drop`` and V2's ``cpb_mlp`` do. At
inference the fused attention kernel applies no ``attn_dropout`` module on
either path.
"""
from typing import Set

import pytest
import torch
import torch.nn.functional as F

from mmswin.models import SwinTransformer, SwinTransformerV2

ARGS = dict(arch=dict(embed_dims=8, depths=(2, ), num_heads=(2, )),
            out_indices=(0, ), window_size=2, drop_path_rate=0.)
# The README's list: never run with the fast path on.
DOCUMENTED = {'attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2'}
# The rest of a block that the fast path goes around.
ALSO_SILENT = {'', 'attn', 'mlp', 'drop_path', 'mlp.drop'}


def silent_hooks(backbone: type, fast: bool, train: bool) -> Set[str]:
    """The modules of both blocks (names relative to the block, the block
    itself '') whose forward hooks did not run in one forward pass; a
    module counts as silent only if it was silent in both blocks."""
    model = backbone(**ARGS, cpu_fast_path=fast).train(train)
    blocks = model.layers[0].blocks
    fired, names = set(), set()
    for block in blocks:
        for name, module in block.named_modules():
            names.add(name)
            module.register_forward_hook(
                lambda *args, name=name: fired.add(name))
    with torch.set_grad_enabled(train):
        model(torch.randn(1, 3, 16, 16))
    return names - fired


@pytest.mark.parametrize('train', [True, False], ids=['train', 'infer'])
@pytest.mark.parametrize('backbone', [SwinTransformer, SwinTransformerV2])
def test_hooks_that_run_with_and_without_the_fast_path(backbone, train):
    v2 = backbone is SwinTransformerV2
    # V2 assembles its qkv bias from q_bias and v_bias, so calls no module
    never = ({'attn.qkv'} if v2 else set()) | (
        set() if train else {'attn.attn_dropout'})
    assert silent_hooks(backbone, fast=False, train=train) == never
    silent = silent_hooks(backbone, fast=True, train=train)
    assert silent == DOCUMENTED | ALSO_SILENT | never
    assert {'norm1', 'norm2', 'attn.proj_drop'}.isdisjoint(silent)
    if v2:
        assert 'attn.cpb_mlp' not in silent


def test_fc1_hook_sees_the_output_after_gelu():
    model = SwinTransformer(**ARGS, cpu_fast_path=False).eval()
    fc1 = model.layers[0].blocks[0].mlp.fc1
    seen = {}
    fc1.register_forward_hook(
        lambda module, args, out: seen.update(x=args[0], out=out))
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 16))
    expected = F.gelu(F.linear(seen['x'], fc1.weight, fc1.bias))
    assert (seen['out'] - expected).abs().max() <= 1e-6
    assert seen['out'].min() < 0  # GELU's negative lobe: not a plain ReLU
    assert (seen['out'] - F.linear(seen['x'], fc1.weight, fc1.bias)).abs(
    ).max() > 1e-2  # control: the linear output alone differs
