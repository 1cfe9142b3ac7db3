"""The toy COCO generator, get_flops, browse_dataset, image_demo,
plot_loss and the SyncBN replacement."""
import json
import os
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    ROOT,
    TOY_SEG_CONFIG,
    coco_data_options,
    load_tool,
    run_tool_ok,
)
from helpers import TOY_DET_CONFIG as MASK_RCNN
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion


@pytest.fixture(scope='module')
def toy_coco(make_toy_coco) -> str:
    return make_toy_coco(seed=5, num_train=4, num_val=2)


# -- toy COCO data ----------------------------------------------------------
def test_toy_coco_is_deterministic_and_seeded(tmp_path):
    toy = load_tool('tools/misc/toy_coco.py')
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        toy.make_coco_toy(str(tmp_path / name), seed=seed, num_train=3,
                          num_val=2)

    def read(name, path):
        with open(tmp_path / name / path, 'rb') as f:
            return f.read()
    for path in ('annotations/train.json', 'annotations/val.json',
                 'train/0002.png', 'val/0001.png'):
        assert read('a', path) == read('b', path)
        assert read('a', path) != read('c', path)


def test_toy_coco_annotations_match_the_pixels(toy_coco):
    """Each polygon is a shape's exact outline: the mask pycocotools
    rasterises from it covers pixels of one flat colour, the boxes stay
    inside the image and never touch."""
    from pycocotools.coco import COCO
    coco = COCO(osp.join(toy_coco, 'annotations/train.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == [
        'square', 'disc', 'triangle']
    for image_info in coco.loadImgs(coco.getImgIds()):
        image = np.asarray(Image.open(
            osp.join(toy_coco, 'train', image_info['file_name'])), np.float64)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_info['id']))
        assert 1 <= len(anns) <= 4
        boxes = []
        for ann in anns:
            mask = coco.annToMask(ann).astype(bool)
            assert abs(mask.sum() - ann['area']) < 0.1 * ann['area']
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and x + w <= 160 and y + h <= 160
            inside = binary_erosion(mask, iterations=2)  # off the rim
            assert inside.sum() > 50
            # One colour plus grain (std 5) inside the shape, unlike the
            # textured background around it.
            assert image[inside].std(axis=0).max() < 8
            ring = binary_dilation(mask, iterations=4) & ~mask
            assert np.abs(image[ring].mean(0) - image[inside].mean(0)).max(
            ) > 10
            boxes.append((x, y, x + w, y + h))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert (a[2] < b[0] or b[2] < a[0] or a[3] < b[1]
                        or b[3] < a[1])


def test_make_toy_data_cli_writes_both_datasets(tmp_path):
    cli = load_tool('tools/misc/make_toy_data.py')
    cli.main(['--out', str(tmp_path), '--num-train', '2', '--num-val', '1'])
    assert sorted(os.listdir(tmp_path / 'coco' / 'train')) == [
        '0000.png', '0001.png']
    with open(tmp_path / 'coco' / 'annotations' / 'val.json') as f:
        assert len(json.load(f)['images']) == 1
    assert len(os.listdir(tmp_path / 'ade' / 'images' / 'training')) == 2


def test_make_toy_data_cli_bad_seed():
    toy = load_tool('tools/misc/toy_coco.py')
    with pytest.raises(ValueError, match='seed must be an int >= 0'):
        toy.make_coco_toy('/tmp/unused', seed=-1)


# -- get_flops ----------------------------------------------------------------
def test_sdpa_flops_equal_the_explicit_matmuls():
    """The counter counts fused attention (the CPU kernel torch's table
    lacks) as q @ k^T plus attn @ v: the same total as the explicit
    matmuls, 2 FLOPs per multiply-accumulate."""
    get_flops = load_tool('tools/analysis_tools/get_flops.py')
    q = torch.randn(2, 3, 49, 32)
    k = torch.randn(2, 3, 40, 32)
    v = torch.randn(2, 3, 40, 16)
    bias = torch.randn(49, 40)  # Swin passes its position bias as a mask
    totals = []
    for fused in (True, False):
        counter = get_flops.flop_counter()
        with counter, torch.no_grad():
            if fused:
                F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            else:
                weights = q @ k.transpose(-2, -1) * 32**-0.5 + bias
                weights.softmax(-1) @ v
        totals.append(counter.get_total_flops())
    assert totals[0] == totals[1] == 2 * 2 * 3 * 49 * 40 * (32 + 16)


def test_get_flops_swin_t_mask_rcnn_matches_the_paper():
    """Published: 48M params, 267G FLOPs at 1280 x 800; the README's
    measured 47.79M and 262.9G (-1.5%) exactly, and within 2% of the
    paper (the counter is exact, so any change of the model or of the
    count shows)."""
    log = run_tool_ok([sys.executable, 'tools/analysis_tools/get_flops.py',
                       'configs/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-1x_coco.py',
                       '--shape', '1280', '800'])
    flops = float(re.search(r'Flops: ([\d.]+) G', log).group(1)) * 1e9
    params = float(re.search(r'Params: ([\d.]+) M', log).group(1)) * 1e6
    assert abs(params - 48e6) / 48e6 < 0.02, params
    assert abs(flops - 267e9) / 267e9 < 0.02, flops
    assert (round(params / 1e6, 2), round(flops / 1e9, 1)) == (47.79, 262.9)
    counted = re.search(r'Counted: (.*)', log).group(1)
    assert 'aten.convolution' in counted and 'attention' in counted


def test_get_flops_serves_segmentation_configs():
    log = run_tool_ok([sys.executable, 'tools/analysis_tools/get_flops.py',
                       TOY_SEG_CONFIG, '--shape', '128'])
    assert re.search(r'Input shape: 128 x 128', log)
    assert float(re.search(r'Flops: ([\d.]+) G', log).group(1)) > 0


# -- browse_dataset, image_demo, plot_loss -----------------------------------
def test_browse_dataset_draws_training_samples(toy_coco, tmp_path):
    out = tmp_path / 'browse'
    log = run_tool_ok([sys.executable,
                       'tools/analysis_tools/browse_dataset.py', MASK_RCNN,
                       '--not-show', '--output-dir', str(out),
                       '--max-images', '2', '--cfg-options',
                       *coco_data_options(toy_coco)])
    assert '2 samples drawn' in log
    assert sorted(os.listdir(out)) == ['0000.png', '0001.png']
    drawn = np.asarray(Image.open(out / '0000.png'))
    assert drawn.shape == (160, 160, 3)


def test_image_demo_draws_boxes_and_masks(toy_coco, tmp_path):
    """A toy detector with random weights and score threshold 0 draws
    its top detections over the image."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(osp.join(ROOT, MASK_RCNN))
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    checkpoint = tmp_path / 'random.pth'
    meta = dict(dataset_meta=cfg.metainfo.to_dict())  # plain, loadable
    torch.save(dict(state_dict=model.state_dict(), meta=meta), checkpoint)
    image = osp.join(toy_coco, 'val', '0000.png')
    out_file = tmp_path / 'pred.png'
    log = run_tool_ok([sys.executable, 'demo/image_demo.py', MASK_RCNN,
                       str(checkpoint), image, '--out-file', str(out_file),
                       '--score-thr', '0'])
    assert f'predictions drawn into {out_file}' in log
    original = np.asarray(Image.open(image).convert('RGB'), np.int16)
    drawn = np.asarray(Image.open(out_file).convert('RGB'), np.int16)
    assert drawn.shape == original.shape
    assert np.abs(drawn - original).max() > 50


def test_plot_loss_reads_training_records(tmp_path):
    plot_loss = load_tool('tools/analysis_tools/plot_loss.py')
    run_dir = tmp_path / '20260101_000000' / 'vis_data'
    run_dir.mkdir(parents=True)
    records = [dict(loss=2.0, loss_cls=1.5, lr=0.1, iter=10, step=10),
               dict(loss=1.0, loss_cls=0.5, lr=0.1, iter=20, step=20),
               {'coco/bbox_mAP': 0.4, 'step': 1}]
    with open(run_dir / 'scalars.json', 'w') as f:
        f.write('\n'.join(json.dumps(r) for r in records))
    scalars = plot_loss.find_scalars(str(tmp_path))
    assert plot_loss.read_losses(scalars) == {
        'loss': [[10, 20], [2.0, 1.0]], 'loss_cls': [[10, 20], [1.5, 0.5]]}
    out = tmp_path / 'curve.png'
    plot_loss.main([str(tmp_path), '--out', str(out)])
    assert Image.open(out).size == (800, 500)


def test_replace_sync_bn_walks_nested_configs():
    tool_utils = load_tool('tools/tool_utils.py')
    model = dict(roi_head=dict(bbox_head=[
        dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        dict(norm_cfg=dict(type='SyncBN')), dict(norm_cfg=None)]),
        backbone=dict(norm_cfg=dict(type='LN')))
    assert tool_utils.replace_sync_bn(model) == 2
    heads = model['roi_head']['bbox_head']
    assert heads[0]['norm_cfg'] == dict(type='BN', requires_grad=True)
    assert heads[1]['norm_cfg'] == dict(type='BN')
    assert model['backbone']['norm_cfg'] == dict(type='LN')
