"""Deployment: export mmswin's detectors and segmentors (any mmdet/mmseg
model with a Swin backbone) to ONNX with dynamic shapes, and run them with
ONNX Runtime or OpenVINO.

Only :mod:`.pooling` and :mod:`.preprocess` load with the package (they
need torch alone, and the pooling is registered in mmswin's ``MODELS``);
the rest needs mmcv/mmdet/mmseg and the ``deploy`` extra (onnx,
onnxruntime, onnxscript; openvino optional) and loads on first use:

- :func:`build_model`, :func:`make_wrapper`, :func:`export_onnx`
  (:mod:`.export`);
- :class:`TwoStageDetectorExport` (:mod:`.detector`),
  :class:`SegmentorExport`, :class:`FeaturesExport` (:mod:`.wrappers`);
- :func:`make_runner`, :func:`cpu_has_bf16`, :class:`OrtRunner`,
  :class:`OpenVinoRunner` (:mod:`.runtime`);
- :func:`paste_masks` (:mod:`.postprocess`);
- :func:`pack_images`, :func:`unpack_detections` (:mod:`.batching`);
- :func:`evaluate_exported`, :class:`BackendModel` (:mod:`.backend_model`),
  :class:`DeployedModel` (:mod:`.deployed_model`).
"""
import importlib

from .pooling import ExportableAdaptiveAvgPool2d, swap_adaptive_pools
from .preprocess import ImagePreprocess

_LAZY = {
    'build_model': 'export', 'make_wrapper': 'export',
    'export_onnx': 'export', 'check_exportable': 'export',
    'TwoStageDetectorExport': 'detector', 'SegmentorExport': 'wrappers',
    'FeaturesExport': 'wrappers', 'OrtRunner': 'runtime',
    'OpenVinoRunner': 'runtime', 'paste_masks': 'postprocess',
    'make_runner': 'runtime', 'cpu_has_bf16': 'runtime',
    'pack_images': 'batching', 'unpack_detections': 'batching',
    'evaluate_exported': 'backend_model', 'BackendModel': 'backend_model',
    'DeployedModel': 'deployed_model',
}

__all__ = ['ExportableAdaptiveAvgPool2d', 'swap_adaptive_pools',
           'ImagePreprocess', *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f'.{_LAZY[name]}', __name__),
                       name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
