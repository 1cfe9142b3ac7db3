"""The checkpoint family table: one module per family in this package.

Each module defines ``FAMILY = Family(...)`` (see :class:`..family.Family`:
detector anchor, aliases, drops, version rule, converter). The loader (layout
detection and ``layout=``) and the converter CLI (``--src-format``) read
:data:`FAMILIES` and :data:`ALIASES` only, so adding a layout means adding a
module here plus its test.
"""
import importlib
import pkgutil
from typing import Dict

from ..family import Family


def _collect() -> Dict[str, Family]:
    """Import every module of this package and key its FAMILY by name.

    Raises:
        TypeError: a module without ``FAMILY = Family(...)``.
        ValueError: two families sharing a name, an alias or an anchor.
    """
    table: Dict[str, Family] = {}
    owner: Dict[str, str] = {}  # name, alias or anchor -> defining module
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f'{__name__}.{info.name}')
        family = getattr(module, 'FAMILY', None)
        if not isinstance(family, Family):
            raise TypeError(f'{module.__name__} must define FAMILY = '
                            'Family(...) (mmswin.checkpoint.family)')
        for claim in family.names + (family.anchor, ):
            if claim in owner:
                raise ValueError(
                    f'{module.__name__} and {owner[claim]} both claim '
                    f'{claim!r}; names, aliases and anchors must be unique')
            owner[claim] = module.__name__
        table[family.name] = family
    return table


FAMILIES: Dict[str, Family] = _collect()
# Every name accepted as ``layout=`` / ``--src-format`` -> its family.
ALIASES: Dict[str, Family] = {
    name: family for family in FAMILIES.values() for name in family.names}
