"""Bookkeeping shared by the layout converters: selecting keys by prefix,
dropping keys by pattern, rename rules, and a log of what each conversion
did (for the loading report)."""
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Sequence, Tuple, Union

import torch

StateDict = Dict[str, torch.Tensor]
Rule = Tuple[str, Union[str, Callable[[re.Match], str]]]
# A key pattern and why keys matching it are no backbone weights.
Drop = Tuple[re.Pattern, str]


@dataclass
class ConversionLog:
    """What a conversion did, keyed by the final (mmswin) key names.

    Attributes:
        renamed: new key -> the source key(s) it came from.
        transformed: new key -> what was done to its values (reordered,
            reshaped, resized).
        dropped: source key -> why it was not kept.
    """

    renamed: Dict[str, str] = field(default_factory=dict)
    transformed: Dict[str, str] = field(default_factory=dict)
    dropped: Dict[str, str] = field(default_factory=dict)

    def rename(self, old: str, new: str) -> None:
        """Record ``old -> new``, composing with earlier renames of ``old``.
        """
        source = self.renamed.pop(old, old)
        if old in self.transformed:
            self.transformed[new] = self.transformed.pop(old)
        if source != new:
            self.renamed[new] = source

    def merge(self, sources: Iterable[str], new: str) -> None:
        """Record that ``new`` was assembled from several source keys."""
        self.renamed[new] = ' + '.join(
            self.renamed.pop(s, s) for s in sources)

    def transform(self, key: str, what: str) -> None:
        """Record a change of values (not only of the name) of ``key``."""
        done = self.transformed.get(key)
        self.transformed[key] = f'{done}; {what}' if done else what


def apply_rules(state: StateDict, rules: List[Rule],
                log: ConversionLog) -> StateDict:
    """Rename every key by applying each regex rule in turn (``re.sub``).

    Raises:
        ValueError: two source keys map to the same new key.
    """
    out: StateDict = {}
    for key, value in state.items():
        new = key
        for pattern, repl in rules:
            new = re.sub(pattern, repl, new)
        if new in out:
            raise ValueError(f'keys {log.renamed.get(new, new)!r} and '
                             f'{key!r} both map to {new!r}')
        out[new] = value
        log.rename(key, new)
    return out


def keys_under(state: StateDict, prefix: str) -> StateDict:
    """The entries whose key starts with ``prefix``, with it removed."""
    return {key[len(prefix):]: value for key, value in state.items()
            if key.startswith(prefix)}


def drop_matching(state: StateDict, drops: Sequence[Drop],
                  log: ConversionLog) -> StateDict:
    """``state`` without the keys that match a pattern of ``drops``; each
    dropped key is logged with the reason of its first matching pattern."""
    kept: StateDict = {}
    for key, value in state.items():
        reason = next((why for pattern, why in drops if pattern.search(key)),
                      None)
        if reason is None:
            kept[key] = value
        else:
            log.dropped[log.renamed.pop(key, key)] = reason
    return kept
