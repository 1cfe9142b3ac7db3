"""Convert a Swin checkpoint of any supported layout to mmswin's.

    python tools/model_converters/convert_checkpoint.py SRC DST
        [--src-format auto|FAMILY] [--window-size N] [--prefix P]

SRC is read safely (``torch.load(weights_only=True)`` or safetensors) and
may be a URL. DST ends in ``.pth`` (``{'state_dict': ..., 'meta': ...}``)
or ``.safetensors``. The backbone is found and its layout detected unless
``--src-format`` names a family or an alias of the family table
(mmswin/checkpoint/families, listed by ``--help``); derived buffers and
classification parts are
dropped. ``--window-size`` resizes V1 relative position bias tables
(bicubic) for a model with another window. mmswin's loader does all this on
the fly as well; converting once gives a small, plain file.
"""
import argparse
import sys
from typing import List, Optional

from mmswin.checkpoint import (
    CheckpointError,
    convert_state_dict,
    read_state_dict,
    save_checkpoint,
)
from mmswin.checkpoint.families import FAMILIES
from mmswin.checkpoint.loader import describe
from mmswin.checkpoint.transfer import resize_to_window

# --src-format choices: the family table's names and aliases.
FORMATS = ('auto', ) + tuple(
    name for family in FAMILIES.values() for name in family.names)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Command-line arguments (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description='Convert a Swin checkpoint to mmswin\'s layout')
    parser.add_argument('src', help='source checkpoint (path or URL)')
    parser.add_argument('dst', help='output .pth or .safetensors')
    families = '; '.join(
        f'{family.name}' + (f' ({", ".join(family.aliases)})'
                            if family.aliases else '')
        for family in FAMILIES.values())
    parser.add_argument('--src-format', default='auto', choices=FORMATS,
                        metavar='FORMAT',
                        help='layout of SRC: auto (default, detect it) or a '
                        f'family (aliases): {families}')
    parser.add_argument('--window-size', type=int, default=None,
                        help='resize V1 bias tables to this window')
    parser.add_argument('--prefix', default=None,
                        help='only keys starting with this (stripped); '
                        'rarely needed, the backbone is found anyway')
    return parser.parse_args(argv)


def convert(src: str, dst: str, src_format: str = 'auto',
            window_size: Optional[int] = None,
            prefix: Optional[str] = None) -> str:
    """Convert ``src`` into ``dst`` and return the report text.

    Raises:
        CheckpointError: unreadable or unsafe file, no Swin weights, or a
            window size that does not apply.
    """
    state = read_state_dict(src, prefix)
    try:
        conversion = convert_state_dict(state, src_format)
    except ValueError as err:
        raise CheckpointError(f'{src!r}: {err}') from None
    if window_size is not None:
        if window_size < 1:
            raise CheckpointError(f'--window-size must be >= 1, got '
                                  f'{window_size}')
        if conversion.version == 2:
            raise CheckpointError(
                'SwinV2 has no bias tables to resize: load the checkpoint as '
                'it is and set window_size and pretrained_window_sizes in the '
                'config')
        conversion.state = resize_to_window(conversion.state, window_size,
                                            conversion.log)
    save_checkpoint(conversion.state, dst, metadata={
        'converted_by': 'mmswin', 'source_layout': conversion.layout,
        'swin_version': str(conversion.version)})
    return describe(conversion, f'{src} and wrote {dst}')


def main(argv: Optional[List[str]] = None) -> int:
    """Run the converter; returns the exit status (2 on a bad checkpoint)."""
    args = parse_args(argv)
    try:
        print(convert(args.src, args.dst, args.src_format, args.window_size,
                      args.prefix))
    except (CheckpointError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
