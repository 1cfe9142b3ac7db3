"""Third-party Swin checkpoints in mmswin's names, by the family table.

mmswin's names are the official Microsoft ones. :func:`convert_state_dict`
finds the Swin backbone inside any checkpoint (classification model,
SimMIM/MoBY ``encoder.``, full detector or segmentor under ``backbone.``,
HF ``swin.``) by the anchors of the families in :mod:`.families`, and runs
the same steps for every family:

1. keep the keys below the backbone's prefix;
2. read the Swin version by the family's rule (and refuse a mismatch);
3. drop derived buffers (``relative_position_index``,
   ``relative_coords_table``, ``attn_mask``) and the family's non-backbone
   keys (heads, final classification norm, ``mask_token``);
4. rename to official names by the family's converter;
5. move patch merging that opens a stage (timm, mmpretrain V2) to the end
   of the previous one, and lay (1, L, C) position tokens on their grid.
"""
import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .families import ALIASES, FAMILIES
from .families.openmmlab import (  # noqa: F401  (public names)
    official_to_unfold_merging,
    unfold_to_official_merging,
)
from .family import DOWNSAMPLE, Family, merging_at_stage_start
from .renaming import (
    ConversionLog,
    Drop,
    Rule,
    StateDict,
    apply_rules,
    drop_matching,
)

# Names accepted for ``layout`` (the converter's --src-format) -> family.
LAYOUT_ALIASES: Dict[str, str] = {
    name: family.name for name, family in ALIASES.items()}

# Buffers every Swin implementation recomputes from the window size.
_DERIVED: Tuple[Drop, ...] = ((re.compile(
    r'(^|\.)(relative_position_index|relative_coords_table|attn_mask|k_bias)'
    r'$'), 'derived buffer'), )


@dataclass
class Conversion:
    """A backbone state dict in mmswin's names and how it was obtained.

    Attributes:
        state: The converted state dict.
        layout: Detected layout (a family's name, or ``timm`` for the
            official family's timm files).
        prefix: Where the backbone sat in the checkpoint (e.g.
            ``'backbone.'``, ``'encoder.'``, ``''``).
        version: 1 or 2 (SwinV2 keys present).
        log: Renamed, transformed and dropped keys.
        ignored: Checkpoint keys outside ``prefix`` (necks, heads).
        other_prefixes: Further prefixes that hold Swin weights (e.g. MoBY's
            momentum encoder ``encoder_k.``), not used.
    """

    state: StateDict
    layout: str
    prefix: str
    version: int
    log: ConversionLog
    ignored: List[str] = field(default_factory=list)
    other_prefixes: List[str] = field(default_factory=list)


def find_backbones(state: StateDict) -> List[Tuple[Family, str]]:
    """All ``(family, prefix)`` pairs of Swin backbones in ``state``,
    shortest prefix first."""
    found = [(family, prefix) for family in FAMILIES.values()
             for prefix in family.find_prefixes(state)]
    return sorted(found, key=lambda fp: (len(fp[1]), fp[0].name, fp[1]))


def _move_merging_to_stage_end(state: StateDict,
                               log: ConversionLog) -> StateDict:
    """``layers.{i}.downsample`` merging the output of stage i-1 becomes
    ``layers.{i-1}.downsample``, as in the official layout."""
    rule: Rule = (DOWNSAMPLE.pattern,
                  lambda m: f'layers.{int(m[1]) - 1}.downsample.')
    return apply_rules(state, [rule], log)


def pos_embed_to_grid(pos: torch.Tensor,
                      grid: Optional[Tuple[int, int]] = None
                      ) -> torch.Tensor:
    """An absolute position embedding as ``(1, C, H, W)``.

    Accepts ``(1, L, C)`` tokens (official classification, OpenMMLab, HF,
    the latter possibly with one extra leading slot) or ``(1, C, H, W)``
    (official det/seg, mmswin). Tokens are laid on ``grid`` when it holds
    L tokens, else on a square grid.

    Raises:
        ValueError: tokens that fill neither grid.
    """
    if pos.dim() == 4:
        return pos
    if pos.dim() != 3:
        raise ValueError(f'absolute_pos_embed must be (1, L, C) or '
                         f'(1, C, H, W), got {tuple(pos.shape)}')
    length = pos.shape[1]
    if grid is None or grid[0] * grid[1] != length:
        side = math.isqrt(length)
        if side * side != length and math.isqrt(length - 1)**2 == length - 1:
            pos, side = pos[:, 1:], math.isqrt(length - 1)  # class slot
        elif side * side != length:
            raise ValueError(f'absolute_pos_embed has {length} tokens, which '
                             'fill no square grid; cannot place them')
        grid = (side, side)
    return pos.transpose(1, 2).reshape(1, -1, *grid).contiguous()


def _square_tokens_to_grid(state: StateDict, log: ConversionLog) -> StateDict:
    """(1, L, C) position tokens of a square grid as (1, C, H, W); other
    token counts wait for the model's grid (see transfer.fit_to_model)."""
    pos = state.get('absolute_pos_embed')
    if pos is None or pos.dim() != 3 or \
            math.isqrt(pos.shape[1])**2 != pos.shape[1]:
        return state
    log.transform('absolute_pos_embed', '(1, L, C) -> (1, C, H, W)')
    return {**state, 'absolute_pos_embed': pos_embed_to_grid(pos)}


def _family_named(layout: str) -> Optional[Family]:
    if layout == 'auto':
        return None
    if layout not in ALIASES:
        raise ValueError(f'unknown layout {layout!r}; choose auto or one of '
                         f'{sorted(ALIASES)}')
    return ALIASES[layout]


def convert_state_dict(state: StateDict, layout: str = 'auto',
                       version: Optional[int] = None) -> Conversion:
    """Find the Swin backbone in ``state`` and return it in mmswin's names.

    Args:
        state: A checkpoint's state dict (any prefix).
        layout: ``'auto'`` or one of :data:`LAYOUT_ALIASES`.
        version: The target's Swin version; a checkpoint of the other
            version is an error.

    Raises:
        ValueError: no Swin backbone of the requested layout, or a V1/V2
            mismatch.
    """
    wanted = _family_named(layout)
    found = [(family, prefix) for family, prefix in find_backbones(state)
             if wanted is None or family is wanted]
    if not found:
        anchors = [wanted.anchor] if wanted else [
            family.anchor for family in FAMILIES.values()]
        raise ValueError(
            f'no Swin backbone found: no key ends with {" or ".join(anchors)}'
            f'. First keys: {list(state)[:5]}')
    family, prefix = found[0]
    sub = family.backbone_state(state, prefix)
    found_version, label = family.version(sub), family.layout(sub)
    if version is not None and version != found_version:
        model = 'SwinTransformerV2' if found_version == 2 else \
            'SwinTransformer'
        raise ValueError(
            f'the checkpoint holds a Swin V{found_version} backbone '
            f'({label} layout) but the model is V{version}; build '
            f'mmswin.{model} for it')
    log = ConversionLog()
    sub = drop_matching(sub, _DERIVED + family.drops, log)
    if family.to_official is not None:
        sub = family.to_official(sub, log, found_version)
    if merging_at_stage_start(sub):
        sub = _move_merging_to_stage_end(sub, log)
    return Conversion(
        state=_square_tokens_to_grid(sub, log), layout=label, prefix=prefix,
        version=found_version, log=log,
        ignored=[k for k in state if not k.startswith(prefix)],
        other_prefixes=[p for _, p in found[1:] if p != prefix])


def from_openmmlab(state: StateDict) -> StateDict:
    """mmdet 3.x / mmseg 1.x / mmpretrain Swin (``stages``, ``w_msa``,
    ``ffn``) to mmswin, including the patch-merging channel order and the
    absolute position embedding as ``(1, C, H, W)``."""
    return convert_state_dict(state, layout='openmmlab').state
