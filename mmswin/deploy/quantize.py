"""int8 post-training quantisation of an exported model, calibrated on the
config's own dataset.

:func:`calibration_inputs` takes N images of the config's test (or val)
dataset through its pipeline and packs each as the graph takes it
(:func:`~mmswin.deploy.batching.pack_images`). Two quantisers use them:

- :func:`quantize_openvino` (the default): NNCF on OpenVINO with the
  transformer preset (``ModelType.TRANSFORMER``), which keeps LayerNorm,
  Softmax, GELU and the element-wise ops in floating point and quantises
  the matmuls and convolutions (weights per output channel, activations
  per tensor); writes an OpenVINO ``.xml`` + ``.bin``.
- :func:`quantize_onnxruntime`: ONNX Runtime static quantisation to a QDQ
  ``.onnx`` (weights int8 per channel, activations uint8 per tensor,
  min-max calibration), of MatMul, Gemm and Conv only (so LayerNorm and
  Softmax stay fp32).

:func:`quantize` is ``tools/deployment/quantize.py``. Both keep the input
and output names and the ``mmswin.*`` metadata of the fp32 file, so the
result is evaluated like any exported model (``tools/test.py CONFIG FILE
--backend ...``).
"""
import copy
import os
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from .signal_stack import keep_signal_stack

QUANTIZERS = {'openvino': '.xml', 'onnxruntime': '.onnx'}
# ONNX op types ONNX Runtime quantises: the matmuls and convolutions.
ORT_OP_TYPES = ('MatMul', 'Gemm', 'Conv')


def _dataset_items(cfg, split: str):
    from mmengine.registry import DATASETS, init_default_scope

    import mmswin  # noqa: F401  (mmswin's registry scope)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise ValueError(f'the config has no {split}_dataloader to '
                         'calibrate on')
    return DATASETS.build(copy.deepcopy(loader.dataset))


def calibration_inputs(cfg, input_names: Sequence[str], count: int,
                       split: str = 'test') -> List[Dict[str, np.ndarray]]:
    """``count`` graph inputs from ``split``'s dataset, one image each.

    The images are spread evenly over the dataset, each through the
    config's pipeline (resize, as at test time) and packed as the graph
    takes it: ``images`` ``(1, 3, h, w)`` float32 and, where the graph
    has it, ``image_sizes`` ``(1, 2)`` int64.
    """
    from mmengine.registry import MODELS

    from .batching import pack_images
    if count < 1:
        raise ValueError(f'--calib must be at least 1, got {count}')
    dataset = _dataset_items(cfg, split)
    if len(dataset) < count:
        raise ValueError(f'--calib {count}: the {split} dataset has only '
                         f'{len(dataset)} images')
    unknown = set(input_names) - {'images', 'image_sizes'}
    if unknown:
        raise ValueError(f'the model file has inputs {list(input_names)}; '
                         'only images and image_sizes can be calibrated')
    preprocessor = MODELS.build(copy.deepcopy(cfg.model.data_preprocessor))
    picks = np.linspace(0, len(dataset) - 1, count).round().astype(int)
    feeds = []
    for index in picks:
        batch, sizes = pack_images([dataset[int(index)]['inputs']],
                                   preprocessor)
        feed = dict(images=batch, image_sizes=sizes)
        feeds.append({name: feed[name] for name in input_names})
    return feeds


def quantize_openvino(model_file: str, feeds: List[Dict[str, np.ndarray]],
                      out: str, ignored_types: Sequence[str] = (),
                      model_type: Optional[str] = 'transformer',
                      preset: str = 'performance') -> str:
    """NNCF int8 quantisation of an ``.onnx``/``.xml`` model into ``out``
    (an OpenVINO ``.xml``).

    Args:
        model_file: The fp32 model.
        feeds: Calibration inputs (:func:`calibration_inputs`).
        out: ``.xml`` to write (its ``.bin`` beside it).
        ignored_types: OpenVINO op types to leave in floating point
            besides the preset's (e.g. ``('ROIAlign',)``).
        model_type: ``'transformer'`` (LayerNorm, Softmax, GELU in float),
            or None: NNCF's generic CNN scheme, a control that also
            quantises the inputs of the softmax and normalisations' matmuls.
        preset: NNCF's ``'performance'`` (symmetric activations) or
            ``'mixed'`` (asymmetric where an input can be negative); mixed
            fails on UperNet, whose concatenation joins a symmetric
            (LayerNorm) and asymmetric (upsampled) input under one scale.
    """
    from .runtime import import_openvino
    ov = import_openvino()
    import nncf
    model = ov.Core().read_model(model_file)
    kwargs = dict(preset=nncf.QuantizationPreset(preset))
    if model_type == 'transformer':
        kwargs['model_type'] = nncf.ModelType.TRANSFORMER
    if ignored_types:
        kwargs['ignored_scope'] = nncf.IgnoredScope(
            types=list(ignored_types), validate=False)
    with keep_signal_stack():  # NNCF compiles the model to calibrate
        quantized = nncf.quantize(model, nncf.Dataset(feeds),
                                  subset_size=len(feeds), **kwargs)
    # Keep the weights' fp32 values where not quantised (save_model would
    # store them in fp16 by default).
    ov.save_model(quantized, out, compress_to_fp16=False)
    return out


class _Feeds:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list."""

    def __init__(self, feeds: List[Dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        return next(self.feeds, None)


def quantize_onnxruntime(model_file: str,
                         feeds: List[Dict[str, np.ndarray]], out: str,
                         op_types: Sequence[str] = ORT_OP_TYPES) -> str:
    """ONNX Runtime static int8 quantisation (QDQ, per-channel weights) of
    ``op_types`` in an ``.onnx`` file into ``out`` (``.onnx``); the
    ``mmswin.*`` metadata is copied."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )
    if not model_file.endswith('.onnx'):
        raise ValueError(f'{model_file}: ONNX Runtime quantises .onnx files')
    source = onnx.load(model_file)
    with tempfile.TemporaryDirectory() as tmp:
        # One self-contained file: the quantiser's temporary copies would
        # lose the exporter's external .data file (a relative path).
        single = osp.join(tmp, 'model.onnx')
        onnx.save(source, single)
        prepared = osp.join(tmp, 'prepared.onnx')
        # Shape inference and constant folding first, as ORT recommends.
        quant_pre_process(single, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, out, _Feeds(feeds), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=dict(CalibTensorRangeSymmetric=False))
    target = onnx.load(out)
    del target.metadata_props[:]
    target.metadata_props.extend(source.metadata_props)
    onnx.save(target, out)
    return out


def quantize(config, model_file: str, out: str, calib: int = 32,
             backend: str = 'openvino', split: str = 'test',
             cfg_options: Optional[dict] = None) -> str:
    """int8 ``out`` from the fp32 ``model_file`` of ``config``, calibrated
    on ``calib`` images of the config's ``split`` dataset; ``backend``
    picks the quantiser and the output format (``.xml`` for OpenVINO,
    ``.onnx`` for ONNX Runtime). Returns ``out``."""
    from mmengine.config import Config

    from .metadata import read_model_file
    if backend not in QUANTIZERS:
        raise ValueError(f'unknown backend {backend!r}; use one of '
                         f'{", ".join(QUANTIZERS)}')
    if not out.endswith(QUANTIZERS[backend]):
        raise ValueError(f'--out {out}: {backend} writes a '
                         f'{QUANTIZERS[backend]} file')
    if not osp.isfile(model_file):
        raise FileNotFoundError(f'model file not found: {model_file}')
    cfg = (copy.deepcopy(config) if isinstance(config, Config) else
           Config.fromfile(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    info = read_model_file(model_file)
    feeds = calibration_inputs(cfg, info.input_names, calib, split)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    if backend == 'openvino':
        return quantize_openvino(model_file, feeds, out)
    return quantize_onnxruntime(model_file, feeds, out)
