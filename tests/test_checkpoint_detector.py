"""Full detector and segmentor checkpoints load into mmswin's configs
through mmengine's ``load_from`` path (``load_checkpoint``, what
``Runner.load_or_resume`` and ``tools/test.py CONFIG CHECKPOINT`` call):

- from the official det/seg repos (mmdet 2.11 / mmseg 0.11): backbone in
  official names with the persistent ``relative_position_index`` buffers,
  heads in mmdet 2.x / mmseg 0.x names. The heads' names are the same in
  mmdet 3.x / mmseg 1.x (checked below against the names in the official
  repos' code), so only the backbone needs the conversion;
- from mmdet 3.x / mmseg 1.x with their own Swin (``stages``, ``w_msa``):
  the backbone's load_state_dict hook converts it, and the model gives the
  same outputs as the mmdet/mmseg model (max abs diff measured <= 4e-6,
  asserted <= 1e-4).

The toy configs are the paper configs shrunk (C=32), so every module type
of the full models is present.
"""
import re
import sys

import pytest
import torch
from helpers import ROOT, max_abs_diff, randomize_, run_tool
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

CONFIGS = {
    'mask-rcnn': 'configs/toy/mask-rcnn_swin-toy_fpn_toy-coco.py',
    'cascade-mask-rcnn':
    'configs/toy/cascade-mask-rcnn_swin-toy_fpn_giou-4conv1f_toy-coco.py',
    'upernet': 'configs/toy/upernet_swin-toy_toy-ade.py',
}
_BN = r'(conv\.weight|bn\.(weight|bias|running_mean|running_var|'\
    r'num_batches_tracked))'
# Parameter names of the heads in the official repos' code (mmdet 2.11:
# FPN, RPNHead, Shared2FC/ConvFC BBoxHead, FCNMaskHead; mmseg 0.11: UPerHead
# with PPM, FCNHead); ConvModules with a norm have no conv bias.
OFFICIAL_HEAD_KEYS = {
    'mask-rcnn': [
        r'neck\.(lateral|fpn)_convs\.[0-3]\.conv\.(weight|bias)',
        r'rpn_head\.rpn_(conv|cls|reg)\.(weight|bias)',
        r'roi_head\.bbox_head\.(shared_fcs\.[01]|fc_cls|fc_reg)\.'
        r'(weight|bias)',
        r'roi_head\.mask_head\.(convs\.[0-3]\.conv|upsample|conv_logits)\.'
        r'(weight|bias)',
    ],
    'cascade-mask-rcnn': [
        r'neck\.(lateral|fpn)_convs\.[0-3]\.conv\.(weight|bias)',
        r'rpn_head\.rpn_(conv|cls|reg)\.(weight|bias)',
        rf'roi_head\.bbox_head\.[0-2]\.shared_convs\.[0-3]\.{_BN}',
        r'roi_head\.bbox_head\.[0-2]\.(shared_fcs\.0|fc_cls|fc_reg)\.'
        r'(weight|bias)',
        r'roi_head\.mask_head\.[0-2]\.(convs\.[0-3]\.conv|upsample|'
        r'conv_logits)\.(weight|bias)',
    ],
    'upernet': [
        rf'decode_head\.(psp_modules\.[0-3]\.1|bottleneck|lateral_convs\.'
        rf'[0-2]|fpn_convs\.[0-2]|fpn_bottleneck)\.{_BN}',
        r'(decode|auxiliary)_head\.conv_seg\.(weight|bias)',
        rf'auxiliary_head\.convs\.0\.{_BN}',
    ],
}


def _build(name: str, seed: int, backbone: dict = None):
    cfg = Config.fromfile(f'{ROOT}/{CONFIGS[name]}')
    if backbone is not None:
        cfg.model.backbone = backbone
    scope = cfg.default_scope
    with DefaultScope.overwrite_default_scope(scope):
        if scope == 'mmdet':
            from mmdet.registry import MODELS
        else:
            from mmseg.registry import MODELS
        model = MODELS.build(cfg.model)
    model.init_weights()
    randomize_(model, seed=seed)
    return cfg, model.eval()


def _official_checkpoint(model, path, name):
    """The official repos' file: mmdet 2.x / mmseg 0.x meta, backbone with
    its persistent relative_position_index buffers."""
    state = dict(model.state_dict())
    for key in list(state):
        match = re.match(r'^(backbone\.layers\.\d+\.blocks\.\d+\.attn\.)'
                         r'relative_position_bias_table$', key)
        if match:
            side = (int(state[key].shape[0]**0.5) + 1) // 2
            state[match[1] + 'relative_position_index'] = torch.zeros(
                side * side, side * side, dtype=torch.long)
    meta = dict(mmdet_version='2.11.0', mmcv_version='1.3.1', epoch=36,
                CLASSES=('square', 'disc', 'triangle'), config=f'# {name}')
    torch.save({'meta': meta, 'state_dict': state}, path)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_official_full_checkpoint(tmp_path, name):
    _, source = _build(name, seed=1)
    heads = [k for k in source.state_dict() if not k.startswith(
        ('backbone.', 'data_preprocessor.'))]
    patterns = [re.compile(p + '$') for p in OFFICIAL_HEAD_KEYS[name]]
    assert [k for k in heads if not any(p.match(k) for p in patterns)] == []
    for pattern in patterns:  # every documented module exists here
        assert any(pattern.match(k) for k in heads), pattern.pattern
    path = tmp_path / 'official.pth'
    _official_checkpoint(source, path, name)
    _, model = _build(name, seed=2)
    load_checkpoint(model, str(path), map_location='cpu', strict=True,
                    revise_keys=[(r'^module\.', '')])
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, theirs[key]), key


def _openmmlab_swin(cfg) -> dict:
    backbone = cfg.model.backbone
    return dict(type='SwinTransformer', embed_dims=backbone.embed_dims,
                depths=backbone.depths, num_heads=backbone.num_heads,
                window_size=backbone.get('window_size', 7),
                drop_path_rate=0., out_indices=(0, 1, 2, 3))


@pytest.mark.parametrize('name', ['mask-rcnn', 'upernet'])
def test_openmmlab_full_checkpoint_gives_same_outputs(tmp_path, name):
    cfg, model = _build(name, seed=2)
    _, theirs = _build(name, seed=1, backbone=_openmmlab_swin(cfg))
    assert any('.w_msa.' in k for k in theirs.state_dict())
    path = tmp_path / 'openmmlab.pth'
    torch.save({'meta': {}, 'state_dict': theirs.state_dict()}, path)
    load_checkpoint(model, str(path), map_location='cpu', strict=True)
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        got, expected = model.extract_feat(x), theirs.extract_feat(x)
    diffs = max_abs_diff(expected, got)
    assert max(diffs) <= 1e-4, diffs


def test_tools_test_runs_an_openmmlab_segmentor_checkpoint(tmp_path,
                                                          make_toy_ade):
    """``tools/test.py CONFIG CHECKPOINT`` with an mmseg 1.x checkpoint
    (mmseg's own Swin) on two toy images: the hook converts the backbone
    and nothing is reported missing."""
    data = make_toy_ade(num_train=1, num_val=2)
    cfg, _ = _build('upernet', seed=0)
    _, theirs = _build('upernet', seed=1, backbone=_openmmlab_swin(cfg))
    path = tmp_path / 'mmseg.pth'
    torch.save({'meta': {}, 'state_dict': theirs.state_dict()}, path)
    code, log = run_tool(
        [sys.executable, 'tools/test.py', CONFIGS['upernet'], str(path),
         '--work-dir', str(tmp_path / 'work'), '--cfg-options',
         f'test_dataloader.dataset.data_root={data}'])
    assert code == 0, log[-3000:]
    assert "mmswin: loaded weights under 'backbone.' into SwinTransformer" \
        in log
    assert 'layout: openmmlab (Swin V1)' in log
    assert 'missing keys' not in log and 'unexpected key' not in log
    assert 'mIoU' in log
