"""HF transformers names: ``SwinModel``, ``SwinBackbone``, ``Swinv2Model``
and their task models (``swin.``/``swinv2.`` + a head).

Both generations of transformers' names are read: transformers 4.x (and
what ``save_pretrained`` still writes) uses ``attention.self.{query,key,
value}``, ``attention.output.dense``, ``intermediate.dense`` and
``output.dense``; transformers 5.x modules name them ``attention.{q,k,v,o}_
proj``, ``attention.relative_position_bias.relative_position_bias_table``
and ``mlp.fc1``/``mlp.fc2``. Patch merging concatenates the 2x2 neighbours
in the official order and sits at the end of stage i (``encoder.layers.
{i}.downsample``), so only names change, apart from the separate q/k/v
projections, which are stacked into ``qkv`` (V2: q and v biases, no k bias).
"""
import re
from typing import Dict, List, Tuple

import torch

from ..family import Family
from ..renaming import ConversionLog, Rule, StateDict, apply_rules

_RULES: List[Rule] = [
    (r'^embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^embeddings\.norm\.', 'patch_embed.norm.'),
    (r'^embeddings\.position_embeddings$', 'absolute_pos_embed'),
    (r'^encoder\.layers\.(\d+)\.', r'layers.\1.'),
    (r'\.layernorm_before\.', '.norm1.'),
    (r'\.layernorm_after\.', '.norm2.'),
    (r'\.attention\.(?:self\.|relative_position_bias\.)'
     r'relative_position_bias_table$', '.attn.relative_position_bias_table'),
    (r'\.attention\.(?:output\.dense|o_proj)\.', '.attn.proj.'),
    (r'\.attention\.self\.logit_scale$', '.attn.logit_scale'),
    (r'\.attention\.self\.continuous_position_bias_mlp\.', '.attn.cpb_mlp.'),
    (r'\.intermediate\.dense\.', '.mlp.fc1.'),
    (r'\.blocks\.(\d+)\.output\.dense\.', r'.blocks.\1.mlp.fc2.'),
    (r'^hidden_states_norms\.stage(\d+)\.', lambda m: f'norm{int(m[1]) - 1}.'),
]

_PROJ = re.compile(r'^(.*)\.attention\.(?:self\.(query|key|value)|'
                   r'(q|k|v)_proj)\.(weight|bias)$')
_QKV_INDEX = {'query': 0, 'key': 1, 'value': 2, 'q': 0, 'k': 1, 'v': 2}


def _stack_projections(state: StateDict, version: int,
                       log: ConversionLog) -> StateDict:
    """Stack the separate q/k/v projections into official ``attn.qkv``; V2
    keeps q and v biases as ``attn.q_bias``/``attn.v_bias``."""
    groups: Dict[Tuple[str, str], Dict[int, Tuple[str, torch.Tensor]]] = {}
    rest: StateDict = {}
    for key, value in state.items():
        match = _PROJ.match(key)
        if match is None:
            rest[key] = value
            continue
        block, old, new, kind = match.groups()
        index = _QKV_INDEX[old or new]
        groups.setdefault((block, kind), {})[index] = (key, value)
    for (block, kind), parts in groups.items():
        sources = [parts[i][0] for i in sorted(parts)]
        if kind == 'bias' and version == 2:
            for index, name in ((0, 'q_bias'), (2, 'v_bias')):
                if index in parts:
                    rest[f'{block}.attn.{name}'] = parts[index][1]
                    log.rename(parts[index][0], f'{block}.attn.{name}')
            if 1 in parts:
                log.dropped[parts[1][0]] = 'SwinV2 has no key bias'
            continue
        if sorted(parts) != [0, 1, 2]:
            raise ValueError(f'{block}: incomplete q/k/v {kind}s {sources}')
        rest[f'{block}.attn.qkv.{kind}'] = torch.cat(
            [parts[i][1] for i in range(3)], dim=0)
        log.merge(sources, f'{block}.attn.qkv.{kind}')
    return rest


def hf_to_official(state: StateDict, log: ConversionLog,
                   version: int) -> StateDict:
    """HF keys (below the model's prefix and ``swin.``/``swinv2.``) to
    official names."""
    return apply_rules(_stack_projections(state, version, log), _RULES, log)


FAMILY = Family(
    name='hf',
    anchor='embeddings.patch_embeddings.projection.weight',
    to_official=hf_to_official,
    v2_markers=('.logit_scale', '.continuous_position_bias_mlp.0.weight'),
    drops=((re.compile(r'^layernorm\.'), 'classification norm'),
           (re.compile(r'^classifier\.'), 'classification head'),
           (re.compile(r'^decoder\.'), 'pretraining decoder'),
           (re.compile(r'^embeddings\.mask_token$'),
            'pretraining mask token')),
    wrapper='swin|swinv2',
)
