"""Build an mmdet/mmseg model from its config and export it to ONNX with
dynamic shapes.

The graph is captured with ``torch.export`` first and only then translated
by ``torch.onnx.export``: while ``torch.onnx.export`` traces, mmdet's
``torch.onnx.is_in_onnx_export()`` branches switch to other, untested code
(e.g. ``onnx_delta2bbox``), whereas ``torch.export`` traces the code that
runs eagerly and that the tests compare against.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .pooling import swap_adaptive_pools

# What each wrapper can export.
PARTS = ('full', 'features')
# Smallest side a dynamic export accepts (tested down to it): UperNet's
# stride-32 map and FPN's stride-64 level keep at least 2 cells.
MIN_SIDE = {'segmentation': 64, 'detection': 65, 'features': 65}
MAX_SIDE = 4096
MAX_BATCH = 64
DETECTION_OUTPUTS = ('num_dets', 'boxes', 'scores', 'labels', 'masks')


def task_of(model: nn.Module) -> str:
    """``'detection'`` (mmdet) or ``'segmentation'`` (mmseg)."""
    for module_name, task in (('mmdet.models.detectors', 'detection'),
                              ('mmseg.models.segmentors', 'segmentation')):
        if type(model).__module__.startswith(module_name):
            return task
    for base in type(model).__mro__:
        if base.__name__ == 'BaseSegmentor':
            return 'segmentation'
        if base.__name__ == 'BaseDetector':
            return 'detection'
    raise NotImplementedError(
        f'{type(model).__name__} is neither an mmdet detector nor an mmseg '
        'segmentor')


def build_model(config, checkpoint: Optional[str] = None,
                cfg_options: Optional[dict] = None) -> nn.Module:
    """The config's model in eval mode, SyncBN reverted to BN, weights from
    ``checkpoint`` (without one: PyTorch's initialisation, no download).

    Args:
        config: Path of an mmdet or mmseg config, or a loaded ``Config``.
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import mmswin  # noqa: F401  (fills the mmswin scope)

    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f"config's default_scope must be 'mmdet' or "
                         f"'mmseg', got {scope!r}")
    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    return revert_sync_batchnorm(model).eval()


def make_wrapper(model: nn.Module, part: str = 'full') -> nn.Module:
    """The traceable wrapper of ``model`` for ``part``: ``'full'`` (mmseg:
    logits; mmdet: num_dets, boxes, scores, labels, masks per image) or
    ``'features'``
    (backbone + neck). Adaptive poolings are swapped for
    :class:`ExportableAdaptiveAvgPool2d`."""
    from .wrappers import FeaturesExport, SegmentorExport

    if part not in PARTS:
        raise ValueError(f'part must be one of {PARTS}, got {part!r}')
    check_exportable(model)
    swap_adaptive_pools(model)
    if part == 'features':
        return FeaturesExport(model).eval()
    if task_of(model) == 'segmentation':
        return SegmentorExport(model).eval()
    from .detector import TwoStageDetectorExport
    return TwoStageDetectorExport(model).eval()


def check_exportable(model: nn.Module) -> None:
    """Refuse, naming the fix, what would export to a wrong graph."""
    training = [name or type(model).__name__
                for name, module in model.named_modules() if module.training]
    if training:
        raise ValueError(
            f'{training[0]} is in training mode: dropout, drop path and '
            'batch statistics would be traced as they run in training; '
            'call model.eval() before exporting')
    for name, module in model.named_modules():
        if getattr(module, 'check_finite', False):
            raise ValueError(
                f'{name} has check_finite=True: its NaN/Inf check raises '
                'from data, which an exported graph cannot do; build it '
                'with check_finite=False for export')


def output_names(wrapper: nn.Module, num_outputs: int) -> Sequence[str]:
    """Names of the graph's outputs."""
    from .detector import TwoStageDetectorExport
    from .wrappers import SegmentorExport
    if isinstance(wrapper, TwoStageDetectorExport):
        return DETECTION_OUTPUTS[:num_outputs]
    if isinstance(wrapper, SegmentorExport):
        return ('logits', )
    return tuple(f'features_{i}' for i in range(num_outputs))


def kind_of(wrapper: nn.Module) -> str:
    """``'detection'``, ``'segmentation'`` or ``'features'``."""
    from .detector import TwoStageDetectorExport
    from .wrappers import SegmentorExport
    if isinstance(wrapper, TwoStageDetectorExport):
        return 'detection'
    if isinstance(wrapper, SegmentorExport):
        return 'segmentation'
    return 'features'


def export_onnx(wrapper: nn.Module, images: torch.Tensor, path: str,
                dynamic: bool = True,
                dynamic_batch: bool = True) -> Tuple[str, ...]:
    """Export ``wrapper`` (from :func:`make_wrapper`) to the ONNX file
    ``path``.

    The graph's inputs are ``images`` ``(B, 3, H, W)`` float32 and, for the
    detector, ``image_sizes`` ``(B, 2)`` int64 (each image's ``(h, w)``).

    Args:
        images: ``(B, 3, H, W)``: the graph's shape for a fixed export; for
            a dynamic one only its batch (without ``dynamic_batch``) and
            sides (checked against :data:`MIN_SIDE`) count, and it is traced
            at :func:`generic_example`'s size.
        dynamic: Dynamic height and width, from :data:`MIN_SIDE` to 4096;
            else the graph is fixed to ``images``' shape.
        dynamic_batch: With ``dynamic``, the batch is dynamic too (1 to
            :data:`MAX_BATCH`); else it is ``images``' batch.

    Returns:
        The graph's output names.
    """
    from .ops import ONNX_TRANSLATIONS

    check_exportable(wrapper)
    kind = kind_of(wrapper)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError('images must be (B, 3, H, W), got shape '
                         f'{tuple(images.shape)}')
    dynamic_shapes = None
    if dynamic:
        low = MIN_SIDE[kind]
        if min(images.shape[2:]) < low:
            raise ValueError(f'a dynamic {kind} export needs sides >= {low},'
                             f' got {tuple(images.shape[2:])}')
        dims = {2: torch.export.Dim('height', min=low, max=MAX_SIDE),
                3: torch.export.Dim('width', min=low, max=MAX_SIDE)}
        batch = images.shape[0]
        if dynamic_batch:
            dims[0] = torch.export.Dim('batch', min=1, max=MAX_BATCH)
            batch = 2  # traced at batch 1, the batch would stay 1
        dynamic_shapes = {'images': dims}
        if kind == 'detection':
            dynamic_shapes['image_sizes'] = {0: dims[0]} if dynamic_batch \
                else None
        images = generic_example(wrapper, batch)
    inputs = (images, )
    if kind == 'detection':
        inputs = (images, example_sizes(images))
    # Size facts the tracer cannot prove (a padded side >= the side, a map
    # with >= 1 window) become checks instead of specialising the graph to
    # the example's size. (Not under no_grad: it traces SDPA to a kernel
    # whose output strides the ONNX decomposition does not reproduce.)
    program = torch.export.export(
        wrapper, inputs, dynamic_shapes=dynamic_shapes, strict=False,
        prefer_deferred_runtime_asserts_over_guards=True)
    names = tuple(output_names(wrapper,
                               len(program.graph_signature.user_outputs)))
    torch.onnx.export(program, f=path, dynamo=True,
                      input_names=['images', 'image_sizes'][:len(inputs)],
                      output_names=list(names),
                      custom_translation_table=ONNX_TRANSLATIONS)
    model = getattr(wrapper, 'detector', getattr(wrapper, 'segmentor', None))
    if model is not None:
        # the runtimes check images and the config's classes against these
        from .metadata import model_metadata, write_metadata
        low = MIN_SIDE[kind] if dynamic else min(images.shape[2:])
        write_metadata(path, model_metadata(model, kind, low, MAX_SIDE))
    return names


def example_sizes(images: torch.Tensor) -> torch.Tensor:
    """``image_sizes`` ``(B, 2)`` int64 for tracing the detector on
    ``images``: the first image fills the batch, the others are smaller
    (mixed sizes, as batches have)."""
    batch, height, width = images.shape[0], images.shape[2], images.shape[3]
    sizes = torch.tensor([[height, width]] * batch, dtype=torch.int64)
    shrink = torch.arange(batch, dtype=torch.int64)[:, None] * 7
    return (sizes - shrink).clamp(min=1)


def generic_example(wrapper: nn.Module, batch: int) -> torch.Tensor:
    """The input a dynamic export is traced with: sides that are multiples
    of nothing, large enough that the coarsest map of every stage has
    several windows (one window, or a side of 1, is a special case the
    tracer would keep)."""
    windows = [size for module in wrapper.modules()
               for size in getattr(module, 'window_sizes', ())]
    side = 32 * (2 * max(windows, default=7) + 1) + 13
    return torch.rand(batch, 3, side, side + 22) * 255
