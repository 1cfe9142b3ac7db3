"""Whole models to ONNX with dynamic shapes (issue 13): the bare backbones,
UperNet and Mask R-CNN's Swin + FPN, each exported once at one size (session
fixtures of tests/export_graphs.py), then run by ONNX Runtime (and OpenVINO)
at other, odd sizes and compared with mmseg's / mmdet's own PyTorch results.
The full detectors are in tests/test_export_batched.py."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from export_graphs import TOY_DET
from helpers import TOY_SEG_CONFIG, randomize_

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from mmswin.deploy import (  # noqa: E402
    ExportableAdaptiveAvgPool2d,
    swap_adaptive_pools,
)
from mmswin.deploy.export import (  # noqa: E402
    build_model,
    export_onnx,
    make_wrapper,
)
from mmswin.deploy.runtime import OrtRunner, random_images  # noqa: E402

# (B, H, W), none of them the export size; sides not multiples of 4, 7, 32
SEG_SHAPES = [(1, 97, 131), (2, 161, 225), (3, 70, 99), (1, 255, 129)]
FEATURE_SHAPES = [(2, 97, 131), (1, 161, 225), (3, 65, 70)]
# fp32 bound on |ORT - PyTorch| relative to the output's largest value
RELATIVE_TOLERANCE = 1e-5


def images_of(shape, seed: int = 0) -> torch.Tensor:
    batch, height, width = shape
    return torch.from_numpy(random_images((batch, 3, height, width), seed))


def assert_close(expected: torch.Tensor, got, what: str) -> float:
    got = torch.as_tensor(np.asarray(got))
    assert got.shape == expected.shape, (what, got.shape, expected.shape)
    diff = (got - expected).abs().max().item()
    bound = RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())
    assert diff <= bound, f'{what}: max abs diff {diff:.3g} > {bound:.3g}'
    return diff


# -- the export-safe adaptive pooling -----------------------------------------
@pytest.mark.parametrize('size', [(1, 1), (5, 7), (6, 6), (13, 21),
                                  (16, 16), (25, 42), (64, 33)])
def test_pool_swap_keeps_mmseg_ppm_outputs(size):
    from mmseg.models.decode_heads.psp_head import PPM
    ppm = PPM((1, 2, 3, 6), 8, 4, conv_cfg=None,
              norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'),
              align_corners=False).eval()
    randomize_(ppm)
    swapped = copy.deepcopy(ppm)
    assert swap_adaptive_pools(swapped) == 4
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        for ours, theirs in zip(swapped(x), ppm(x)):
            assert (ours - theirs).abs().max().item() <= 1e-6


@pytest.mark.parametrize('output_size', [3, (2, 5), (None, 4), (6, None)])
def test_pool_matches_torch_with_partial_sizes(output_size):
    x = torch.randn(2, 3, 11, 17)
    ours = ExportableAdaptiveAvgPool2d(output_size)(x)
    theirs = nn.AdaptiveAvgPool2d(output_size)(x)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= 1e-6


def test_native_pool_export_is_wrong_where_ours_is_exact(tmp_path):
    """Control: the exporter's own decomposition of AdaptiveAvgPool2d is
    wrong at 25x42 after an export at 16x16; the swapped module is exact."""
    dims = {2: torch.export.Dim('h', min=6, max=256),
            3: torch.export.Dim('w', min=6, max=256)}
    x = torch.randn(1, 8, 25, 42)
    expected = nn.AdaptiveAvgPool2d(6)(x)
    diffs = {}
    for name, pool in (('native', nn.AdaptiveAvgPool2d(6)),
                       ('ours', ExportableAdaptiveAvgPool2d(6))):
        path = str(tmp_path / f'{name}.onnx')
        torch.onnx.export(pool.eval(), (torch.randn(1, 8, 16, 16), ), path,
                          dynamo=True, dynamic_shapes=(dims, ),
                          input_names=['images'])
        got = OrtRunner(path)(x.numpy())[0]
        diffs[name] = np.abs(got - expected.numpy()).max()
    assert diffs['native'] > 1e-2, diffs
    assert diffs['ours'] <= 1e-6, diffs


# -- the bare backbone in OpenVINO ------------------------------------------
def test_backbone_openvino_matches_pytorch(backbone_graph):
    """One dynamic export of a two-stage backbone (V1 and V2), as a user
    writes it; OpenVINO within 1e-4 of eager at odd sizes and batches."""
    pytest.importorskip('openvino')
    from mmswin.deploy.runtime import OpenVinoRunner
    backbone, _, path = backbone_graph
    runner = OpenVinoRunner(path)
    for shape in [(1, 3, 97, 131), (2, 3, 161, 225), (3, 3, 33, 47),
                  (1, 3, 511, 511)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = backbone(x)
        got = runner(x.numpy())
        assert len(got) == len(expected)
        for ref, out in zip(expected, got):
            assert out.shape == tuple(ref.shape)
            assert np.abs(out - ref.numpy()).max() <= 1e-4, shape


# -- UperNet: image in, logits out -----------------------------------------
def mmseg_logits(model, images: torch.Tensor) -> torch.Tensor:
    """``model.predict``'s logits, through mmseg's own data preprocessor."""
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(images)), False)
        results = model.predict(data['inputs'])
    return torch.stack([r.seg_logits.data for r in results])


@pytest.mark.parametrize('shape', SEG_SHAPES)
def test_upernet_onnxruntime_matches_mmseg(upernet_graph, shape):
    model, _, path = upernet_graph
    images = images_of(shape, seed=sum(shape))
    expected = mmseg_logits(model, images)
    assert expected.shape == (shape[0], 4, *shape[1:])
    assert_close(expected, OrtRunner(path)(images.numpy())[0], 'logits')


@pytest.mark.parametrize('shape', SEG_SHAPES)
def test_upernet_openvino_matches_mmseg(upernet_graph, shape):
    pytest.importorskip('openvino')
    from mmswin.deploy.runtime import OpenVinoRunner
    model, _, path = upernet_graph
    images = images_of(shape, seed=sum(shape))
    assert_close(mmseg_logits(model, images),
                 OpenVinoRunner(path)(images.numpy())[0], 'logits')


# -- Mask R-CNN: Swin + FPN ---------------------------------------------------
@pytest.mark.parametrize('shape', FEATURE_SHAPES)
def test_swin_fpn_onnxruntime_matches_mmdet(det_features_graph, shape):
    model, _, path = det_features_graph
    images = images_of(shape, seed=sum(shape))
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(images)), False)
        expected = model.extract_feat(data['inputs'])
    got = OrtRunner(path)(images.numpy())
    assert len(got) == len(expected) == 5
    for level, (ref, out) in enumerate(zip(expected, got)):
        assert_close(ref, out, f'FPN level {level}')


# -- what does not export gets a clear error ---------------------------------
@pytest.fixture(scope='module')
def toy_detector():
    return build_model(TOY_DET)


def test_training_mode_is_refused(toy_detector):
    model = copy.deepcopy(toy_detector).train()
    with pytest.raises(ValueError, match=r'training mode.*model\.eval\(\)'):
        make_wrapper(model)


def test_check_finite_is_refused():
    model = build_model(TOY_DET,
                        cfg_options={'model.backbone.check_finite': True})
    with pytest.raises(ValueError, match='check_finite=True'):
        make_wrapper(model)


def test_detector_small_sides_are_refused(toy_detector, tmp_path):
    wrapper = make_wrapper(copy.deepcopy(toy_detector))
    path = str(tmp_path / 'x.onnx')
    with pytest.raises(ValueError, match='sides >= 65'):
        export_onnx(wrapper, images_of((1, 64, 128)), path)


def test_unsupported_heads_and_modes_are_refused():
    soft = build_model(TOY_DET, cfg_options={
        'model.test_cfg.rcnn.nms': dict(type='soft_nms', iou_threshold=0.5)})
    with pytest.raises(NotImplementedError, match='type="nms"'):
        make_wrapper(soft)
    unbounded = build_model(TOY_DET, cfg_options={
        'model.test_cfg.rcnn.max_per_img': -1})
    with pytest.raises(NotImplementedError,
                       match=r'rcnn\.max_per_img must be > 0'):
        make_wrapper(unbounded)
    slide = build_model(TOY_SEG_CONFIG, cfg_options={
        'model.test_cfg': dict(mode='slide', crop_size=(64, 64),
                               stride=(32, 32))})
    with pytest.raises(NotImplementedError, match='mode=whole'):
        make_wrapper(slide)
    with pytest.raises(ValueError, match='part must be one of'):
        make_wrapper(build_model(TOY_SEG_CONFIG), 'backbone')
