"""A checkpoint family: one row of the table in :mod:`.families`.

A family is everything mmswin needs to know about one way of naming Swin
weights: how to find such a backbone in a checkpoint (its anchor key), the
names a user may give it, which keys are not backbone weights, how to tell
SwinV2 from V1, and how to rename it to mmswin's (official) names. The
loader and the converter CLI read nothing else about layouts.
"""
import re
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

from .renaming import ConversionLog, Drop, StateDict, keys_under

# (state below the backbone's prefix, log, Swin version 1 or 2) -> the
# state in official names.
Converter = Callable[[StateDict, ConversionLog, int], StateDict]

# Official names of the classification and pretraining parts (Microsoft's
# classification and SimMIM code, timm, mmswin's own files). The final
# ``norm`` over 8C is dropped, not mapped to ``norm3``: the official det/seg
# repos and mmdet's converter start the per-output norms fresh as well.
CLASSIFICATION_PARTS: Tuple[Drop, ...] = (
    (re.compile(r'^head\.'), 'classification head'),
    (re.compile(r'^norm\.(weight|bias)$'), 'classification norm (over 8C)'),
    (re.compile(r'^mask_token$'), 'pretraining mask token'),
)

# ``layers.{i}.downsample``: official patch merging closes stage i; timm and
# mmpretrain V2 open stage i with it instead (and never have stage 0's).
DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.')


def merging_at_stage_start(state: StateDict) -> bool:
    """True when the patch merging of official-named ``state`` opens the
    stages (timm, mmpretrain V2) rather than closing them."""
    stages = {int(m[1]) for m in map(DOWNSAMPLE.match, state) if m}
    return bool(stages) and 0 not in stages


@dataclass(frozen=True)
class Family:
    """One checkpoint family (a row of the family table).

    Attributes:
        name: The family's name, reported as the layout unless ``variant``
            says otherwise, and accepted as ``layout=`` / ``--src-format``.
        anchor: The detector: this family's key of the patch-embedding
            weight. A checkpoint key equal to it or ending in ``'.' +
            anchor`` marks a backbone; what precedes it is its prefix.
        aliases: Further names accepted as ``layout=`` / ``--src-format``.
        to_official: Renames (and reshapes) the backbone's keys, below its
            prefix and after ``drops``, to official names; ``None`` when the
            family's names are the official ones.
        v2_markers: The version rule: key suffixes that only SwinV2 has.
        drops: Patterns of keys below the prefix that are no backbone
            weights (heads, pretraining parts), with the reason reported.
        wrapper: Regex of the attribute under which the family's task models
            keep the backbone (HF ``swin.``). It stays inside the backbone's
            keys, so that the task model's own head is dropped with a reason
            instead of being ignored as lying outside the prefix.
        variant: Names the reported layout from the backbone's keys (the
            official family reports timm files as ``'timm'``).
    """

    name: str
    anchor: str
    aliases: Tuple[str, ...] = ()
    to_official: Optional[Converter] = None
    v2_markers: Tuple[str, ...] = ('.logit_scale', '.cpb_mlp.0.weight')
    drops: Tuple[Drop, ...] = ()
    wrapper: Optional[str] = None
    variant: Optional[Callable[[StateDict], str]] = None

    @property
    def names(self) -> Tuple[str, ...]:
        """Every name that selects this family."""
        return (self.name, ) + self.aliases

    def find_prefixes(self, keys: Iterable[str]) -> List[str]:
        """The prefixes of this family's backbones among ``keys``."""
        found = set()
        for key in keys:
            if key == self.anchor or key.endswith('.' + self.anchor):
                prefix = key[:-len(self.anchor)]
                if self.wrapper:
                    prefix = re.sub(rf'(^|\.)(?:{self.wrapper})\.$', r'\1',
                                    prefix)
                found.add(prefix)
        return sorted(found)

    def backbone_state(self, state: StateDict, prefix: str) -> StateDict:
        """The keys of the backbone under ``prefix``, in the family's names
        (prefix and wrapper removed)."""
        sub = keys_under(state, prefix)
        if self.wrapper:
            wrapper = re.compile(rf'^(?:{self.wrapper})\.')
            sub = {wrapper.sub('', key): value for key, value in sub.items()}
        return sub

    def version(self, state: StateDict) -> int:
        """1 or 2, by the version rule, from the backbone's keys."""
        return 2 if any(key.endswith(self.v2_markers) for key in state) \
            else 1

    def layout(self, state: StateDict) -> str:
        """The layout name reported for the backbone ``state``."""
        return self.variant(state) if self.variant else self.name
