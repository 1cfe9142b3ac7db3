"""Checkpoint loading: safe reading, layout detection and conversion by the
family table (one module per family in ``families/``), window/grid
transfer, mmengine resume under ``weights_only``, and the check that a
checkpoint fits the model (``fit``, ``fit_hook``)."""
from . import safe_globals  # noqa: F401  (allowlists mmengine checkpoints)
from .families import FAMILIES
from .family import Family
from .fit import (
    CheckpointMismatchError,
    FitReport,
    check_fit,
    load_checkpoint,
    require_fit,
)
from .fit_hook import CheckpointFitHook
from .io import (
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    extract_state_dict,
    probe_checkpoint,
    read_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from .layouts import (
    LAYOUT_ALIASES,
    Conversion,
    convert_state_dict,
    from_openmmlab,
    official_to_unfold_merging,
    unfold_to_official_merging,
)
from .loader import (
    LoadReport,
    install_layout_hook,
    load_pretrained,
    prepare_for_model,
)
from .transfer import ShapeMismatchError, resize_bias_table, resize_pos_embed

__all__ = [
    'CheckpointError', 'CorruptCheckpointError', 'UnsafeCheckpointError',
    'ShapeMismatchError', 'CheckpointMismatchError', 'FitReport',
    'check_fit', 'require_fit', 'load_checkpoint', 'CheckpointFitHook',
    'probe_checkpoint', 'Conversion', 'LoadReport', 'LAYOUT_ALIASES',
    'FAMILIES', 'Family', 'read_checkpoint', 'read_state_dict',
    'extract_state_dict', 'save_checkpoint',
    'convert_state_dict', 'from_openmmlab', 'unfold_to_official_merging',
    'official_to_unfold_merging', 'load_pretrained', 'prepare_for_model',
    'install_layout_hook', 'resize_bias_table', 'resize_pos_embed',
]
