"""Session fixtures: the graphs the export tests make, each exported once
and shared by the files that check them (ONNX Runtime and OpenVINO parity,
the TensorRT-readiness check): the bare Swin V1/V2 backbones, the toy
UperNet, the toy Mask R-CNN's Swin + FPN, and the full toy Mask R-CNN,
Cascade Mask R-CNN and Faster R-CNN (batched detector graphs).

The models use two-stage Swins: tracing time grows about 4x per stage (the
symbolic sizes nest one ceil-division deeper each stage); the heads, the
padding, shift and masks are the same at any depth.
"""
import sys
from typing import NamedTuple

import pytest
import torch
import torch.nn as nn
from helpers import TOY_SEG_CONFIG, config_path, randomize_, run_tool_ok

TOY_DET = config_path('toy/mask-rcnn_swin-toy_fpn_toy-coco')
TOY_CASCADE = config_path(
    'toy/cascade-mask-rcnn_swin-toy_fpn_giou-4conv1f_toy-coco')
TOY_FASTER = 'configs/toy/faster-rcnn_swin-toy_fpn_toy-coco.py'
TWO_STAGE_DET = {'model.backbone.depths': (1, 1),
                 'model.backbone.strides': (4, 2),
                 'model.backbone.num_heads': (1, 2),
                 'model.backbone.out_indices': (0, 1),
                 'model.neck.in_channels': [32, 64]}
TWO_STAGE_SEG = {'model.backbone.depths': (1, 2),
                 'model.backbone.strides': (4, 2),
                 'model.backbone.num_heads': (1, 2),
                 'model.backbone.out_indices': (0, 1),
                 'model.decode_head.in_channels': [32, 64],
                 'model.decode_head.in_index': [0, 1],
                 'model.auxiliary_head.in_channels': 64,
                 'model.auxiliary_head.in_index': 1}
# A score threshold that leaves the toy Mask R-CNN's random-weight
# detections (scores 0.28 to 0.34) at a few per image, a different number
# in each: the rows past num_dets are exercised.
DET_FULL = {**TWO_STAGE_DET, 'model.test_cfg.rcnn.score_thr': 0.295}
PREDICTION_LAYERS = ('rpn_cls', 'rpn_reg', 'fc_cls', 'fc_reg', 'conv_logits',
                     'conv_seg')
# The cascade's graph is exported at a fixed shape (a batch of 2 at
# 160 x 192: a quarter of a dynamic export's time); images of mixed sizes
# inside it still exercise its per-image sizes.
CASCADE_EXPORT_SHAPE = (2, 3, 160, 192)
# The tool exports the Faster R-CNN at a fixed shape too (batch 1).
FASTER_TOOL_ARGS = ['--shape', '128', '160', '--verify', '2', '--atol',
                    '1e-3', '--cfg-options'] + [
    f'{k}={str(v).replace(" ", "")}' for k, v in TWO_STAGE_DET.items()]


class Exported(NamedTuple):
    """A model, its export wrapper and the ONNX file."""
    model: nn.Module
    wrapper: nn.Module
    path: str


def keep_activations_alive_(model: nn.Module, seed: int = 0) -> None:
    """Variance-preserving random weights in every conv and linear layer,
    batch norms scaling by about 1: through the deep heads the activations
    keep their scale, so the detectors' scores differ between boxes (equal
    scores would make NMS's order a coin toss between two runtimes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                # prediction layers: logits and deltas of order 0.1 to 1
                gain = 0.1 if name.endswith(PREDICTION_LAYERS) else 1
                module.weight.copy_(torch.randn(
                    module.weight.shape, generator=gen) * (gain / fan_in)**0.5)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.add_(1)


def toy_model(config: str, options: dict) -> nn.Module:
    """``config`` built with ``options`` and random weights that keep the
    heads' activations alive."""
    from mmswin.deploy.export import build_model
    model = build_model(config, cfg_options=options)
    randomize_(model)
    keep_activations_alive_(model)
    return model


def exported(tmp_path_factory, config: str, part: str, export_shape,
             options: dict, dynamic: bool = True) -> Exported:
    """Build ``config`` with ``options`` and random weights, export
    ``part`` once (``export_shape``: ``(B, 3, H, W)``)."""
    from mmswin.deploy.export import export_onnx, make_wrapper
    model = toy_model(config, options)
    wrapper = make_wrapper(model, part)
    path = str(tmp_path_factory.mktemp('onnx') / 'model.onnx')
    export_onnx(wrapper, torch.rand(*export_shape) * 255, path,
                dynamic=dynamic)
    return Exported(model, wrapper, path)


@pytest.fixture(scope='session', params=[1, 2], ids=['v1', 'v2'])
def backbone_graph(request, tmp_path_factory) -> Exported:
    """A two-stage Swin V1 or V2 backbone exported as a user writes it
    (``torch.onnx.export``, dynamic batch, height and width)."""
    from mmswin.models import SwinTransformer, SwinTransformerV2
    arch = dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2))
    backbone = (SwinTransformer(arch=arch, out_indices=(0, 1))
                if request.param == 1 else SwinTransformerV2(
                    arch=arch, window_size=(8, 4), out_indices=(0, 1)))
    randomize_(backbone).eval()
    path = str(tmp_path_factory.mktemp('onnx') / 'backbone.onnx')
    dims = {0: torch.export.Dim('batch', max=64),
            2: torch.export.Dim('height', min=16, max=4096),
            3: torch.export.Dim('width', min=16, max=4096)}
    torch.onnx.export(backbone, (torch.randn(2, 3, 128, 160), ), path,
                      dynamo=True, input_names=['images'],
                      dynamic_shapes={'x': dims})
    return Exported(backbone, backbone, path)


@pytest.fixture(scope='session')
def upernet_graph(tmp_path_factory) -> Exported:
    return exported(tmp_path_factory, TOY_SEG_CONFIG, 'full', (1, 3, 128, 160),
                    TWO_STAGE_SEG)


@pytest.fixture(scope='session')
def det_features_graph(tmp_path_factory) -> Exported:
    return exported(tmp_path_factory, TOY_DET, 'features', (1, 3, 160, 192),
                    TWO_STAGE_DET)


@pytest.fixture(scope='session')
def mask_rcnn_graph(tmp_path_factory) -> Exported:
    """The full toy Mask R-CNN, dynamic batch, height and width."""
    return exported(tmp_path_factory, TOY_DET, 'full', (1, 3, 160, 160),
                    DET_FULL)


@pytest.fixture(scope='session')
def cascade_graph(tmp_path_factory) -> Exported:
    """The full toy Cascade Mask R-CNN at CASCADE_EXPORT_SHAPE."""
    return exported(tmp_path_factory, TOY_CASCADE, 'full',
                    CASCADE_EXPORT_SHAPE, TWO_STAGE_DET, dynamic=False)


@pytest.fixture(scope='session')
def faster_rcnn_tool_export(tmp_path_factory):
    """``tools/deployment/export_onnx.py`` on the toy Faster R-CNN (full):
    ``(its log, the ONNX file)``."""
    out = tmp_path_factory.mktemp('onnx') / 'faster_rcnn.onnx'
    log = run_tool_ok([sys.executable, 'tools/deployment/export_onnx.py',
                       TOY_FASTER, '--out', str(out), *FASTER_TOOL_ARGS])
    return log, str(out)
