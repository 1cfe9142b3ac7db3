"""OpenMMLab names: mmdet 3.x, mmseg 1.x and mmpretrain 1.x.

Blocks sit in ``stages`` with ``attn.w_msa`` and ``ffn.layers``; patch
merging gathers the 2x2 neighbours with ``nn.Unfold``, whose channel order
differs from the official concat. mmpretrain V2 opens stage i+1 with the
merging (reduction, then a norm over 2C) and closes every n-th block of the
huge/giant models with ``norm3``.
"""
import re
from typing import Dict, List, Set

import torch

from ..family import CLASSIFICATION_PARTS, DOWNSAMPLE, Family
from ..renaming import ConversionLog, Rule, StateDict, apply_rules

# nn.Unfold interleaves channels (c * 4 + k) with the neighbours in the order
# TL, TR, BL, BR; the official code concatenates 4 whole C-chunks in the
# order TL, BL, TR, BR.
_UNFOLD_TO_OFFICIAL = [0, 2, 1, 3]

_RULES: List[Rule] = [
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^stages\.(\d+)\.', r'layers.\1.'),
    (r'\.attn\.w_msa\.', '.attn.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
]
_EXTRA_NORM = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.norm3\.')


def unfold_to_official_merging(weight: torch.Tensor) -> torch.Tensor:
    """Reorder the 4C input axis (the last) of a merging weight or norm
    from OpenMMLab's Unfold order to the official concat order.

    Shape:
        - weight: ``(..., 4C)``; output: the same.
    """
    *lead, four_c = weight.shape
    chunks = weight.reshape(*lead, four_c // 4, 4).transpose(-1, -2)
    return chunks[..., _UNFOLD_TO_OFFICIAL, :].reshape(*lead, four_c)


def official_to_unfold_merging(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unfold_to_official_merging`."""
    *lead, four_c = weight.shape
    chunks = weight.reshape(*lead, 4, four_c // 4)[..., _UNFOLD_TO_OFFICIAL, :]
    return chunks.transpose(-1, -2).reshape(*lead, four_c)


def openmmlab_to_official(state: StateDict, log: ConversionLog,
                          version: int) -> StateDict:
    """OpenMMLab keys (below the backbone's prefix) to official names, the
    merging weights in the official channel order."""
    state = apply_rules(state, _RULES, log)
    for key in list(state):
        # The reduction always reads the 4C concat; V1 normalises that
        # concat too, V2 the 2C output (kept as it is).
        if DOWNSAMPLE.match(key) and (key.endswith('reduction.weight')
                                      or version == 1):
            state[key] = unfold_to_official_merging(state[key])
            log.transform(key, 'Unfold -> official 2x2 channel order')
    # mmpretrain V2 huge/giant: mmswin keeps the norm3 that closes every
    # n-th block as the stage's extra_norms, applied at the same points.
    blocks: Dict[str, Set[int]] = {}
    for match in filter(None, map(_EXTRA_NORM.match, state)):
        blocks.setdefault(match[1], set()).add(int(match[2]))
    rules: List[Rule] = [
        (rf'^layers\.{stage}\.blocks\.{block}\.norm3\.',
         f'layers.{stage}.extra_norms.{rank}.')
        for stage, ids in blocks.items()
        for rank, block in enumerate(sorted(ids))]
    return apply_rules(state, rules, log) if rules else state


FAMILY = Family(
    name='openmmlab',
    anchor='patch_embed.projection.weight',
    aliases=('mmdet', 'mmseg', 'mmpretrain'),
    to_official=openmmlab_to_official,
    drops=CLASSIFICATION_PARTS,
)
