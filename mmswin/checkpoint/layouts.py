"""Key layouts of third-party Swin checkpoints, mapped to mmswin's.

mmswin's names are the official Microsoft ones. :func:`convert_state_dict`
finds the Swin backbone inside any checkpoint (classification model,
SimMIM/MoBY ``encoder.``, full detector or segmentor under ``backbone.``,
HF ``swin.``), recognises its layout and returns it in mmswin's names:

- ``official``: Microsoft classification and det/seg repos; mmswin itself.
- ``timm``: official names, patch merging at the start of stage i+1.
- ``openmmlab``: mmdet 3.x, mmseg 1.x and mmpretrain 1.x (``stages``,
  ``w_msa``, ``ffn``, Unfold channel order of patch merging; mmpretrain V2
  merges at the start of stage i+1).
- ``torchvision``: one ``features`` sequence (see torchvision_layout).
- ``hf``: HF transformers (see hf_layout).

Derived buffers (``relative_position_index``, ``relative_coords_table``,
``attn_mask``) and classification parts (``head``, the final ``norm`` over
8C, ``mask_token``) are dropped. The final ``norm`` is *not* mapped to
``norm3``: the official detection and segmentation repos and mmdet's
converter leave the per-output norms freshly initialised as well.
"""
import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .hf_layout import hf_to_official
from .renaming import ConversionLog, Rule, StateDict, apply_rules
from .torchvision_layout import torchvision_to_official

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


# Each family is recognised by the key of its patch-embedding weight; what
# precedes it is the prefix of the backbone inside the checkpoint.
ANCHORS: Dict[str, str] = {
    'official': 'patch_embed.proj.weight',
    'openmmlab': 'patch_embed.projection.weight',
    'torchvision': 'features.1.0.attn.qkv.weight',
    'hf': 'embeddings.patch_embeddings.projection.weight',
}
# Names accepted for ``layout`` (the converter's --src-format).
LAYOUT_ALIASES: Dict[str, str] = {
    'official': 'official', 'mmswin': 'official', 'timm': 'official',
    'mmdet': 'openmmlab', 'mmseg': 'openmmlab', 'mmpretrain': 'openmmlab',
    'openmmlab': 'openmmlab', 'torchvision': 'torchvision', 'hf': 'hf',
}

_OPENMMLAB_RULES: List[Rule] = [
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^stages\.(\d+)\.', r'layers.\1.'),
    (r'\.attn\.w_msa\.', '.attn.'),
    (r'\.ffn\.layers\.0\.0\.', '.mlp.fc1.'),
    (r'\.ffn\.layers\.1\.', '.mlp.fc2.'),
]
_DERIVED = ('relative_position_index', 'relative_coords_table', 'attn_mask',
            'k_bias')
_CLASSIFICATION = [
    (re.compile(r'^head\.'), 'classification head'),
    (re.compile(r'^norm\.(weight|bias)$'), 'classification norm (over 8C)'),
    (re.compile(r'^mask_token$'), 'pretraining mask token'),
]
_DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.')
_EXTRA_NORM = re.compile(r'^layers\.(\d+)\.blocks\.(\d+)\.norm3\.')


@dataclass
class Conversion:
    """A backbone state dict in mmswin's names and how it was obtained.

    Attributes:
        state: The converted state dict.
        layout: Detected family (``official``, ``timm``, ``openmmlab``,
            ``torchvision``, ``hf``).
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


def find_backbones(state: StateDict) -> List[Tuple[str, str]]:
    """All ``(family, prefix)`` pairs of Swin backbones in ``state``,
    shortest prefix first."""
    found = []
    for key in state:
        for family, anchor in ANCHORS.items():
            if key == anchor or key.endswith('.' + anchor):
                prefix = key[:-len(anchor)]
                if family == 'hf':  # the model part stays in the sub-dict
                    prefix = re.sub(r'(^|\.)swin(v2)?\.$', r'\1', prefix)
                found.append((family, prefix))
    return sorted(set(found), key=lambda fp: (len(fp[1]), fp))


def _from_openmmlab(state: StateDict, log: ConversionLog) -> StateDict:
    state = apply_rules(state, _OPENMMLAB_RULES, log)
    for key in list(state):
        match = _DOWNSAMPLE.match(key)
        if match is None:
            continue
        reduction = state.get(f'layers.{match[1]}.downsample.reduction.weight')
        # V1 normalises the 4C concat (reorder it); V2 the 2C output (keep).
        if key.endswith('reduction.weight') or (
                reduction is not None
                and state[key].shape[-1] == reduction.shape[-1]):
            state[key] = unfold_to_official_merging(state[key])
            log.transform(key, 'Unfold -> official 2x2 channel order')
    # mmpretrain V2 (huge/giant): norm3 closes every n-th block; mmswin
    # keeps these as the stage's extra_norms, applied at the same points.
    blocks: Dict[str, set] = {}
    for key in state:
        match = _EXTRA_NORM.match(key)
        if match:
            blocks.setdefault(match[1], set()).add(int(match[2]))
    rules: List[Rule] = [
        (rf'^layers\.{stage}\.blocks\.{block}\.norm3\.',
         f'layers.{stage}.extra_norms.{rank}.')
        for stage, ids in blocks.items()
        for rank, block in enumerate(sorted(ids))]
    return apply_rules(state, rules, log) if rules else state


def _merging_at_stage_start(state: StateDict) -> bool:
    stages = {int(m[1]) for m in map(_DOWNSAMPLE.match, state) if m}
    return bool(stages) and 0 not in stages


def _move_merging_to_stage_end(state: StateDict,
                               log: ConversionLog) -> StateDict:
    """timm / mmpretrain V2: ``layers.{i}.downsample`` merges the output of
    stage i-1; the official layout keeps it at the end of stage i-1."""
    rule: Rule = (_DOWNSAMPLE.pattern,
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


def _finish(state: StateDict, log: ConversionLog) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        if key.rsplit('.', 1)[-1] in _DERIVED:
            log.dropped[log.renamed.pop(key, key)] = 'derived buffer'
            continue
        reason = next((why for pattern, why in _CLASSIFICATION
                       if pattern.search(key)), None)
        if reason:
            log.dropped[log.renamed.pop(key, key)] = reason
            continue
        if key == 'absolute_pos_embed' and value.dim() == 3:
            side = math.isqrt(value.shape[1])
            if side * side == value.shape[1]:  # else the model's grid decides
                value = pos_embed_to_grid(value)
                log.transform(key, '(1, L, C) -> (1, C, H, W)')
        out[key] = value
    return out


def _version(state: StateDict) -> int:
    is_v2 = any(k.endswith(('.logit_scale', '.cpb_mlp.0.weight'))
                for k in state)
    return 2 if is_v2 else 1


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
    family = None
    if layout != 'auto':
        if layout not in LAYOUT_ALIASES:
            raise ValueError(f'unknown layout {layout!r}; choose auto or one '
                             f'of {sorted(LAYOUT_ALIASES)}')
        family = LAYOUT_ALIASES[layout]
    found = [fp for fp in find_backbones(state)
             if family is None or fp[0] == family]
    if not found:
        wanted = ANCHORS[family] if family else ' or '.join(ANCHORS.values())
        raise ValueError(
            f'no Swin backbone found: no key ends with {wanted}. First keys: '
            f'{list(state)[:5]}')
    family, prefix = found[0]
    sub = {k[len(prefix):]: v for k, v in state.items()
           if k.startswith(prefix)}
    log = ConversionLog()
    if family == 'openmmlab':
        sub = _from_openmmlab(sub, log)
    elif family == 'torchvision':
        sub = torchvision_to_official(sub, log)
    elif family == 'hf':
        sub = hf_to_official(sub, log)
    label = family
    if _merging_at_stage_start(sub):
        sub = _move_merging_to_stage_end(sub, log)
        label = 'timm' if family == 'official' else family
    elif family == 'official' and 'head.fc.weight' in sub:
        label = 'timm'
    found_version = _version(sub)
    if version is not None and version != found_version:
        model = 'SwinTransformerV2' if found_version == 2 else \
            'SwinTransformer'
        raise ValueError(
            f'the checkpoint holds a Swin V{found_version} backbone '
            f'({label} layout) but the model is V{version}; build '
            f'mmswin.{model} for it')
    return Conversion(
        state=_finish(sub, log), layout=label, prefix=prefix,
        version=found_version, log=log,
        ignored=[k for k in state if not k.startswith(prefix)],
        other_prefixes=[p for _, p in found[1:] if p != prefix])


def from_openmmlab(state: StateDict) -> StateDict:
    """mmdet 3.x / mmseg 1.x / mmpretrain Swin (``stages``, ``w_msa``,
    ``ffn``) to mmswin, including the patch-merging channel order and the
    absolute position embedding as ``(1, C, H, W)``."""
    return convert_state_dict(state, layout='openmmlab').state
