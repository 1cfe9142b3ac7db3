"""The Swin-T backbones compared, built with one set of weights.

mmdet's backbone is built first with its own initialisation; mmswin's copies
load its weights through :func:`mmswin.checkpoint.layouts.from_openmmlab`
and HF's ``SwinModel`` through :func:`hf_state_from_mmswin`, so every
implementation computes the same function and :func:`max_output_diff`
can check it.
"""
from typing import Callable, Dict, Sequence, Tuple

import torch
import torch.nn as nn

TINY = dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
# mmswin-sdpa / -math: the default eager path (the CPU fast path on CPU) with
# each attention kernel; mmswin-plain: the same model with cpu_fast_path off,
# the path that torch.compile and export trace.
IMPLEMENTATIONS = ('mmswin-sdpa', 'mmswin-math', 'mmswin-plain', 'mmdet',
                   'hf')
BASELINE = 'mmdet'


def hf_state_from_mmswin(state: Dict[str, torch.Tensor]
                         ) -> Dict[str, torch.Tensor]:
    """mmswin (official) Swin keys to HF ``SwinModel`` keys.

    HF splits ``qkv`` into ``q_proj``/``k_proj``/``v_proj`` and has one final
    ``layernorm``, which takes ``norm3``; the other per-stage output norms
    have no HF counterpart and are dropped. Patch merging already uses the
    official neighbour order in HF.
    """
    renames = [
        ('patch_embed.proj.', 'embeddings.patch_embeddings.projection.'),
        ('patch_embed.norm.', 'embeddings.norm.'),
        ('layers.', 'encoder.layers.'),
        ('.norm1.', '.layernorm_before.'),
        ('.norm2.', '.layernorm_after.'),
        ('.attn.proj.', '.attention.o_proj.'),
        ('.attn.relative_position_bias_table',
         '.attention.relative_position_bias.relative_position_bias_table'),
    ]
    out = {}
    for key, value in state.items():
        if key.startswith('norm'):
            if key.startswith('norm3.'):
                out['layernorm.' + key.split('.', 1)[1]] = value
            continue
        for old, new in renames:
            key = key.replace(old, new)
        if '.attn.qkv.' in key:
            for name, part in zip('qkv', value.chunk(3)):
                new = key.replace('.attn.qkv.', f'.attention.{name}_proj.')
                out[new] = part
        else:
            out[key] = value
    return out


def _mmdet(with_cp: bool) -> nn.Module:
    from mmdet.models.backbones import SwinTransformer
    torch.manual_seed(0)
    model = SwinTransformer(**TINY, window_size=7, drop_path_rate=0.,
                            out_indices=(0, 1, 2, 3), with_cp=with_cp)
    model.init_weights()
    # mmdet's init leaves the bias tables at zero; random tables make the
    # output check below sensitive to the position bias too.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith('relative_position_bias_table'):
                param.normal_(std=0.02)
    return model


def _mmswin(variant: str, with_cp: bool) -> nn.Module:
    from mmswin.models import SwinTransformer
    return SwinTransformer(arch='tiny', drop_path_rate=0., with_cp=with_cp,
                           attn_impl='sdpa' if variant == 'plain' else
                           variant, cpu_fast_path=variant != 'plain')


def _hf() -> nn.Module:
    from transformers import SwinConfig, SwinModel
    config = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2],
                        num_heads=[3, 6, 12, 24], window_size=7,
                        drop_path_rate=0.)
    return SwinModel(config, add_pooling_layer=False)


def build_backbones(names: Sequence[str] = IMPLEMENTATIONS,
                    with_cp: bool = False,
                    device: str = 'cpu') -> Dict[str, nn.Module]:
    """The named backbones (subset of :data:`IMPLEMENTATIONS`), in eval
    mode, all holding mmdet's randomly initialised weights."""
    from mmswin.checkpoint.layouts import from_openmmlab
    unknown = set(names) - set(IMPLEMENTATIONS)
    if unknown:
        raise ValueError(f'unknown implementations {sorted(unknown)}; '
                         f'choose from {IMPLEMENTATIONS}')
    reference = _mmdet(with_cp)
    state = from_openmmlab(reference.state_dict())
    models: Dict[str, nn.Module] = {}
    for name in names:
        if name == 'mmdet':
            model = reference
        elif name == 'hf':
            if with_cp:
                raise ValueError('with_cp is not offered for HF SwinModel')
            model = _hf()
            model.load_state_dict(hf_state_from_mmswin(state), strict=True)
        else:
            model = _mmswin(name.split('-', 1)[1], with_cp)
            model.load_state_dict(state, strict=True)
        model.to(device)
        model.eval()  # mmdet's train() override returns None: no chaining
        models[name] = model
    return models


def forward_fn(name: str, model: nn.Module
               ) -> Callable[[torch.Tensor], Tuple[torch.Tensor, ...]]:
    """A callable giving a tuple of outputs for either output convention.

    HF's ``SwinModel`` returns the last stage's tokens after its final norm,
    ``(B, L, 8C)``; they are reshaped to ``(B, 8C, h, w)`` to compare with
    the last output of the others.
    """
    if name != 'hf':
        return model

    def run(x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        tokens = model(pixel_values=x).last_hidden_state
        h, w = -(-x.shape[2] // 4), -(-x.shape[3] // 4)  # patch grid
        for _ in range(3):  # three patch mergings
            h, w = -(-h // 2), -(-w // 2)
        return (tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w), )

    return run


def max_output_diff(reference: Sequence[torch.Tensor],
                    other: Sequence[torch.Tensor]) -> float:
    """Max abs difference over the outputs ``other`` has (HF: the last)."""
    pairs = zip(reference[-len(other):], other)
    return max((a.float() - b.float()).abs().max().item() for a, b in pairs)
