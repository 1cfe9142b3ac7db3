"""Official Microsoft names: the classification repo (V1 and V2, ``model``),
its detection and segmentation repos (``backbone.``), SimMIM and MoBY
(``encoder.``), timm 1.x, and mmswin itself.

timm keeps the official names but opens stage i+1 with the patch merging
that closes stage i in the official code, and names its head ``head.fc``;
such files are reported as ``timm`` (the merging is moved back by the
loader for every family).
"""
from ..family import CLASSIFICATION_PARTS, Family, merging_at_stage_start
from ..renaming import StateDict


def official_or_timm(state: StateDict) -> str:
    """``'timm'`` for timm's merging position or head, else ``'official'``.
    """
    timm = merging_at_stage_start(state) or 'head.fc.weight' in state
    return 'timm' if timm else 'official'


FAMILY = Family(
    name='official',
    anchor='patch_embed.proj.weight',
    aliases=('mmswin', 'timm'),
    drops=CLASSIFICATION_PARTS,
    variant=official_or_timm,
)
