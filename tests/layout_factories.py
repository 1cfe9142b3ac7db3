"""Swin checkpoints in the documented key layouts of implementations that
do not import here (official Microsoft V1/V2, its det/seg repos, SimMIM,
MoBY, timm, torchvision, mmpretrain V1/V2), written from an mmswin state
dict, plus the small backbone they are made from.

The producers follow the layouts' published code, independently of
mmswin.checkpoint (the patch-merging channel order of OpenMMLab is derived
from ``nn.Unfold`` itself), so that a test loading their output checks
mmswin's converters against the layouts, not against themselves.
"""
import re
from typing import Dict, List

import torch
import torch.nn as nn
from helpers import randomize_

from mmswin.models import SwinTransformer, SwinTransformerV2

StateDict = Dict[str, torch.Tensor]
ARCH = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
WINDOW = 4


def make_model(version: int = 1, seed: int = 1234, **kwargs) -> nn.Module:
    """A small mmswin backbone (C=32) with random weights, in eval mode."""
    cls = SwinTransformer if version == 1 else SwinTransformerV2
    kwargs.setdefault('window_size', WINDOW)
    model = cls(arch=ARCH, drop_path_rate=0., **kwargs)
    return randomize_(model, seed=seed).eval()


def _blocks(state: StateDict) -> List[str]:
    return sorted({m[0] for m in map(
        re.compile(r'^layers\.\d+\.blocks\.\d+\.').match, state) if m})


def official_layout(state: StateDict, window: int = WINDOW,
                    num_classes: int = 10) -> StateDict:
    """Microsoft classification checkpoint: persistent derived buffers,
    final norm + head, no per-output norms, position tokens (1, L, C)."""
    gen = torch.Generator().manual_seed(5)
    out = {k: v for k, v in state.items() if not re.match(r'norm\d', k)}
    n = window * window
    for block in _blocks(state):
        out[block + 'attn.relative_position_index'] = torch.randint(
            0, (2 * window - 1)**2, (n, n), generator=gen)
        if int(block.split('.')[3]) % 2:
            out[block + 'attn_mask'] = torch.zeros(4, n, n)
        if block + 'attn.logit_scale' in state:
            out[block + 'attn.relative_coords_table'] = torch.rand(
                1, 2 * window - 1, 2 * window - 1, 2, generator=gen)
    width = state['layers.3.blocks.0.norm1.weight'].numel()
    out['norm.weight'] = torch.rand(width, generator=gen)
    out['norm.bias'] = torch.rand(width, generator=gen)
    out['head.weight'] = torch.rand(num_classes, width, generator=gen)
    out['head.bias'] = torch.rand(num_classes, generator=gen)
    if 'absolute_pos_embed' in out:
        pos = out['absolute_pos_embed']
        out['absolute_pos_embed'] = pos.flatten(2).transpose(1, 2)
    return out


def timm_layout(state: StateDict) -> StateDict:
    """timm 1.x: official names, merging at the start of stage i+1,
    ``head.fc``, non-persistent derived buffers."""
    out = {}
    for key, value in official_layout(state).items():
        if key.endswith(('relative_position_index', 'attn_mask',
                         'relative_coords_table')):
            continue
        key = re.sub(r'^layers\.(\d+)\.downsample',
                     lambda m: f'layers.{int(m[1]) + 1}.downsample', key)
        out[key.replace('head.', 'head.fc.')] = value
    return out


def torchvision_layout(state: StateDict) -> StateDict:
    """torchvision: one ``features`` sequence, ``mlp.0``/``mlp.3``; V2 has
    a full ``qkv.bias`` whose k third is ignored."""
    gen = torch.Generator().manual_seed(6)
    out = {}
    for key, value in official_layout(state).items():
        if key.endswith(('attn_mask', 'relative_position_index')):
            continue
        key = re.sub(r'^patch_embed\.proj\.', 'features.0.0.', key)
        key = re.sub(r'^patch_embed\.norm\.', 'features.0.2.', key)
        key = re.sub(r'^layers\.(\d+)\.blocks\.',
                     lambda m: f'features.{2 * int(m[1]) + 1}.', key)
        key = re.sub(r'^layers\.(\d+)\.downsample\.',
                     lambda m: f'features.{2 * int(m[1]) + 2}.', key)
        key = key.replace('.mlp.fc1.', '.mlp.0.').replace('.mlp.fc2.',
                                                            '.mlp.3.')
        if key.endswith('attn.q_bias'):
            v_bias = state[_mmswin_key(key).replace('q_bias', 'v_bias')]
            k_noise = torch.randn(value.shape, generator=gen)
            key, value = key.replace('q_bias', 'qkv.bias'), torch.cat(
                [value, k_noise, v_bias])
        elif key.endswith('attn.v_bias'):
            continue
        out[key] = value
    return out


def _mmswin_key(torchvision_key: str) -> str:
    stage, rest = re.match(r'^features\.(\d+)\.(.*)$',
                           torchvision_key).groups()
    return f'layers.{(int(stage) - 1) // 2}.blocks.{rest}'


def unfold_permutation(channels: int) -> torch.Tensor:
    """Indices p with ``W_unfold = W_official[..., p]``, from nn.Unfold."""
    offsets = [(0, 0), (1, 0), (0, 1), (1, 1)]  # official x0, x1, x2, x3
    ids = torch.zeros(channels, 2, 2)
    for k, (row, col) in enumerate(offsets):
        ids[:, row, col] = k * channels + torch.arange(channels)
    unfolded = nn.Unfold(kernel_size=2, stride=2)(ids[None])
    return unfolded.flatten().long()


def openmmlab_layout(state: StateDict, merge_at_start: bool = False
                     ) -> StateDict:
    """mmdet/mmseg/mmpretrain: ``stages``, ``w_msa``, ``ffn``, Unfold
    channel order; ``merge_at_start``: mmpretrain V2 (merging at the start
    of stage i+1, norm over 2C)."""
    out = {}
    for key, value in state.items():
        match = re.match(r'^layers\.(\d+)\.downsample\.(\w+)\.(\w+)$', key)
        if match:
            stage, part, kind = int(match[1]), match[2], match[3]
            perm = unfold_permutation(value.shape[-1] // 4)
            if part == 'reduction' or value.numel() == 4 * (
                    state[f'layers.{stage}.downsample.reduction.weight']
                    .shape[-1] // 4):
                value = value[..., perm]
            stage = stage + 1 if merge_at_start else stage
            out[f'stages.{stage}.downsample.{part}.{kind}'] = value
            continue
        key = key.replace('patch_embed.proj.', 'patch_embed.projection.')
        key = re.sub(r'^layers\.', 'stages.', key)
        key = key.replace('.attn.', '.attn.w_msa.')
        key = key.replace('.mlp.fc1.', '.ffn.layers.0.0.').replace(
            '.mlp.fc2.', '.ffn.layers.1.')
        if key == 'absolute_pos_embed':
            value = value.flatten(2).transpose(1, 2)
        out[key] = value
    for block in _blocks(state):
        n = WINDOW * WINDOW
        out['stages' + block[6:] + 'attn.w_msa.relative_position_index'] = \
            torch.zeros(n, n, dtype=torch.long)
    return out
