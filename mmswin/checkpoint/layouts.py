"""Key layouts of third-party Swin checkpoints, mapped to mmswin's.

mmswin's names are the official Microsoft ones; each function here takes a
backbone-only state dict in another layout and returns it in mmswin's.
"""
import re
from typing import Dict

import torch

StateDict = Dict[str, torch.Tensor]

# OpenMMLab's PatchMerging gathers the 2x2 neighbours with nn.Unfold, which
# interleaves channels (c * 4 + k) with neighbours in the order TL, TR, BL, BR;
# the official code concatenates 4 whole C-chunks in the order TL, BL, TR, BR.
_UNFOLD_TO_OFFICIAL = [0, 2, 1, 3]


def unfold_to_official_merging(weight: torch.Tensor) -> torch.Tensor:
    """Reorder the 4C input axis (the last) of a merging weight or norm
    from OpenMMLab's Unfold order to the official concat order."""
    *lead, four_c = weight.shape
    chunks = weight.reshape(*lead, four_c // 4, 4).transpose(-1, -2)
    return chunks[..., _UNFOLD_TO_OFFICIAL, :].reshape(*lead, four_c)


def official_to_unfold_merging(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unfold_to_official_merging`."""
    *lead, four_c = weight.shape
    chunks = weight.reshape(*lead, 4, four_c // 4)[..., _UNFOLD_TO_OFFICIAL, :]
    return chunks.transpose(-1, -2).reshape(*lead, four_c)


_MMDET_RENAMES = [
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^stages\.(\d+)\.', r'layers.\1.'),
    (r'\.attn\.w_msa\.', '.attn.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
]


def from_openmmlab(state: StateDict) -> StateDict:
    """mmdet 3.x / mmseg 1.x Swin (``stages``, ``w_msa``, ``ffn``) to mmswin.

    Also converts the patch-merging channel order and the absolute position
    embedding from ``(1, L, C)`` tokens to ``(1, C, H, W)`` (square grid).
    """
    out: StateDict = {}
    for key, value in state.items():
        if key.endswith('relative_position_index'):
            continue  # derived, recomputed by mmswin
        new = key
        for pattern, repl in _MMDET_RENAMES:
            new = re.sub(pattern, repl, new)
        if '.downsample.' in new:
            value = unfold_to_official_merging(value)
        if new == 'absolute_pos_embed' and value.dim() == 3:
            side = int(round(value.shape[1]**0.5))
            value = value.transpose(1, 2).reshape(1, -1, side, side)
        out[new] = value
    return out
