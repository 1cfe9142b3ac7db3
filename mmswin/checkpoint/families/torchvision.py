"""torchvision names: ``swin_{t,s,b}`` and ``swin_v2_{t,s,b}``.

torchvision keeps everything in one ``features`` sequence: ``features.0`` is
the patch embedding (conv, permute, LayerNorm), odd indices ``2k+1`` hold the
blocks of stage k, even indices ``2k+2`` the patch merging after stage k
(official 2x2 order; V2 reduces, then normalises over 2C). Block MLPs are
``mlp.0``/``mlp.3``. The V2 attention has one ``qkv.bias`` whose key part
torchvision zeroes at run time, so only its q and v thirds are kept.
"""
import re
from typing import List

from ..family import Family
from ..renaming import ConversionLog, Rule, StateDict, apply_rules

_RULES: List[Rule] = [
    (r'^features\.0\.0\.', 'patch_embed.proj.'),
    (r'^features\.0\.2\.', 'patch_embed.norm.'),
    (r'^features\.(\d+)\.(\d+)\.',
     lambda m: f'layers.{(int(m[1]) - 1) // 2}.blocks.{m[2]}.'
     if int(m[1]) % 2 else m[0]),
    (r'^features\.(\d+)\.(reduction|norm)\.',
     lambda m: f'layers.{int(m[1]) // 2 - 1}.downsample.{m[2]}.'),
    (r'\.mlp\.0\.', '.mlp.fc1.'),
    (r'\.mlp\.3\.', '.mlp.fc2.'),
]


def torchvision_to_official(state: StateDict, log: ConversionLog,
                            version: int) -> StateDict:
    """torchvision keys (below the backbone's prefix) to official names."""
    kept: StateDict = {}
    for key, value in state.items():
        if version == 2 and key.endswith('.attn.qkv.bias'):
            stem = key[:-len('qkv.bias')]
            q_bias, _, v_bias = value.chunk(3, dim=0)
            kept[stem + 'q_bias'], kept[stem + 'v_bias'] = q_bias, v_bias
            log.rename(key, stem + 'q_bias')
            log.renamed[stem + 'v_bias'] = key
            log.transform(stem + 'q_bias', 'q third of qkv.bias')
            log.transform(stem + 'v_bias', 'v third of qkv.bias (k third '
                          'is zeroed by torchvision, dropped)')
        else:
            kept[key] = value
    return apply_rules(kept, _RULES, log)


FAMILY = Family(
    name='torchvision',
    anchor='features.1.0.attn.qkv.weight',
    to_official=torchvision_to_official,
    drops=((re.compile(r'^norm\.'), 'classification norm'),
           (re.compile(r'^head\.'), 'classification head')),
)
