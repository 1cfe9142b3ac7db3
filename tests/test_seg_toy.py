"""The toy ADE20K-format dataset and the segmentation quickstart's tools:
3 training iterations through tools/train.py, tools/test.py giving mIoU
and prediction images, and tools/test.py's multi-scale + flip mode."""
import glob
import hashlib
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from helpers import (
    ROOT,
    TOY_SEG_CONFIG,
    ade_data_options,
    load_tool,
    run_tool_ok,
)
from mmengine.config import Config
from PIL import Image

import mmswin  # noqa: F401

TOY_CONFIG = osp.join(ROOT, TOY_SEG_CONFIG)
toy_ade = load_tool('tools/misc/toy_ade.py')
CLASSES, PALETTE, make_ade_toy = (toy_ade.CLASSES, toy_ade.PALETTE,
                                  toy_ade.make_ade_toy)


def digest(folder: str) -> dict:
    """relative path -> sha1 of every file under ``folder``."""
    out = {}
    for path in sorted(glob.glob(osp.join(folder, '**', '*'),
                                 recursive=True)):
        if osp.isfile(path):
            with open(path, 'rb') as f:
                out[osp.relpath(path, folder)] = hashlib.sha1(
                    f.read()).hexdigest()
    return out


def test_toy_ade_is_seeded_and_ade20k_formatted(tmp_path):
    make_ade_toy(str(tmp_path / 'a'), seed=3, num_train=4, num_val=2)
    make_ade_toy(str(tmp_path / 'b'), seed=3, num_train=4, num_val=2)
    make_ade_toy(str(tmp_path / 'c'), seed=4, num_train=4, num_val=2)
    first = digest(str(tmp_path / 'a'))
    assert first == digest(str(tmp_path / 'b'))
    assert first != digest(str(tmp_path / 'c'))
    assert sorted(first) == sorted(
        [f'images/training/{i:04d}.jpg' for i in range(4)] +
        [f'annotations/training/{i:04d}.png' for i in range(4)] +
        [f'images/validation/{i:04d}.jpg' for i in range(2)] +
        [f'annotations/validation/{i:04d}.png' for i in range(2)])
    values = set()
    for i in range(4):
        image = Image.open(tmp_path / 'a' / f'images/training/{i:04d}.jpg')
        label = Image.open(
            tmp_path / 'a' / f'annotations/training/{i:04d}.png')
        assert (image.mode, image.size) == ('RGB', (128, 128))
        assert (label.mode, label.size) == ('L', (128, 128))
        values |= set(np.unique(np.asarray(label)).tolist())
    # 0 = unlabelled outlines, 1..4 = classes before reduce_zero_label
    assert {0, 1} <= values <= set(range(len(CLASSES) + 1))
    assert len(values) >= 3


@pytest.mark.parametrize('kwargs, message', [
    (dict(root=''), 'root must be a non-empty path'),
    (dict(root='x', seed=-1), 'seed must be an int >= 0'),
    (dict(root='x', size=16), 'size must be >= 32 pixels'),
    (dict(root='x', num_val=0), 'num_val must be >= 1'),
])
def test_toy_ade_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_ade_toy(**kwargs)


def test_toy_config_matches_the_generator():
    cfg = Config.fromfile(TOY_CONFIG)
    assert cfg.metainfo.classes == CLASSES
    assert [tuple(c) for c in cfg.metainfo.palette] == list(PALETTE)
    assert cfg.model.decode_head.num_classes == len(CLASSES)
    assert cfg.train_dataloader.dataset.reduce_zero_label
    # CPU: plain BN everywhere, nothing to download.
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert cfg.model.auxiliary_head.norm_cfg.type == 'BN'
    assert cfg.model.backbone.init_cfg is None


def logged_metrics(work_dir: str) -> dict:
    """Metrics that tools/test.py logged as json in ``work_dir``."""
    logs = glob.glob(osp.join(work_dir, '*', '*.json'))
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        return json.loads(f.readline())


def recomputed_metrics(config: str, checkpoint: str, data: str) -> dict:
    """mIoU and aAcc (percent) of ``checkpoint`` on the validation images,
    computed here with numpy from mmseg's single-image inference and the
    label PNGs: per-class intersection and union summed over the images,
    labels shifted by reduce_zero_label (0 ignored), classes that never
    occur left out of the mean, as mmseg's IoUMetric defines them."""
    from mmseg.apis import inference_model, init_model
    model = init_model(config, checkpoint, device='cpu')
    num = len(CLASSES)
    inter, union = np.zeros(num), np.zeros(num)
    correct = total = 0
    for image in sorted(glob.glob(osp.join(data, 'images/validation/*'))):
        label = osp.join(data, 'annotations/validation',
                         osp.basename(image).replace('.jpg', '.png'))
        gt = np.asarray(Image.open(label)).astype(np.int64) - 1  # 0 -> -1
        with torch.no_grad():
            pred = inference_model(model, image).pred_sem_seg.data[0].numpy()
        valid = gt >= 0
        correct += int((pred[valid] == gt[valid]).sum())
        total += int(valid.sum())
        for c in range(num):
            p, g = (pred == c) & valid, gt == c
            inter[c] += (p & g).sum()
            union[c] += (p | g).sum()
    with np.errstate(invalid='ignore'):
        iou = inter / union
    return dict(mIoU=100 * np.nanmean(iou), aAcc=100 * correct / total)


@pytest.fixture(scope='module')
def toy_run(make_toy_ade, tmp_path_factory):
    """Toy data (8 train / 4 val images) and a 3-iteration checkpoint
    trained by tools/train.py."""
    data = make_toy_ade(seed=0, num_train=8, num_val=4)
    roots = ade_data_options(data)
    tmp = tmp_path_factory.mktemp('toy_seg')
    train_dir = str(tmp / 'train')
    run_tool_ok([sys.executable, 'tools/train.py', TOY_CONFIG, '--work-dir',
                 train_dir, '--cfg-options', 'train_cfg.max_iters=3',
                 'train_cfg.val_interval=3', *roots])
    return tmp, data, roots, osp.join(train_dir, 'iter_3.pth')


def test_three_iterations_then_test_gives_miou_and_pictures(toy_run):
    tmp, data, roots, checkpoint = toy_run
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 3
    assert state['meta']['dataset_meta']['classes'] == CLASSES
    assert 'backbone.layers.0.blocks.0.attn.qkv.weight' in state[
        'state_dict']

    test_dir, vis_dir = str(tmp / 'test'), str(tmp / 'vis')
    # absolute: mmseg's visualizer puts a relative --show-dir under the
    # current directory
    run_tool_ok([sys.executable, 'tools/test.py', TOY_CONFIG, checkpoint,
                 '--work-dir', test_dir, '--show-dir', vis_dir,
                 '--cfg-options', *roots])
    metrics = logged_metrics(test_dir)
    expected = recomputed_metrics(TOY_CONFIG, checkpoint, data)
    assert metrics['mIoU'] == pytest.approx(expected['mIoU'], abs=0.006)
    assert metrics['aAcc'] == pytest.approx(expected['aAcc'], abs=0.006)
    pictures = glob.glob(osp.join(vis_dir, '**', '*.png'), recursive=True)
    assert len(pictures) == 4, pictures
    picture = np.asarray(Image.open(pictures[0]))
    # ground truth and prediction side by side, each drawn over the input
    assert picture.shape == (128, 256, 3)


def test_multi_scale_flip_test_on_one_image(toy_run):
    """tools/test.py --tta turns the toy config into SegTTAModel + the TTA
    pipeline; on one image that gives 12 views (6 scales x flip) at the
    official sizes, and the merged prediction is the argmax of the mean
    softmax of the views, mapped back to the input size."""
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    enable_tta = load_tool('tools/test.py').enable_tta
    _, data, _, checkpoint = toy_run
    cfg = Config.fromfile(TOY_CONFIG)
    enable_tta(cfg)  # what --tta does
    init_default_scope('mmseg')
    tta = MODELS.build(cfg.model)
    assert type(tta).__name__ == 'SegTTAModel'
    tta.module.load_state_dict(torch.load(
        checkpoint, map_location='cpu', weights_only=False)['state_dict'])
    tta.eval()
    sample = dict(
        img_path=osp.join(data, 'images/validation/0000.jpg'),
        seg_map_path=osp.join(data, 'annotations/validation/0000.png'),
        reduce_zero_label=True, seg_fields=[])
    views = Compose(cfg.test_dataloader.dataset.pipeline)(sample)
    shapes = [tuple(x.shape[1:]) for x in views['inputs']]
    flips = [s.flip for s in views['data_samples']]
    # (512, 128) * r with the ratio kept: a 128x128 image becomes 128r.
    sides = [int(128 * r) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    assert sorted(shapes) == sorted([(s, s) for s in sides] * 2)
    assert sorted(flips) == [False] * 6 + [True] * 6

    with torch.no_grad():
        # merged is the last view's sample: keep its prediction before the
        # single-view passes below overwrite it
        merged = tta.test_step(pseudo_collate([views]))[0]
        merged_pred = merged.pred_sem_seg.data[0].clone()
        mean = 0
        for x, s in zip(views['inputs'], views['data_samples']):
            out = tta.module.test_step(dict(inputs=[x], data_samples=[s]))[0]
            assert out.seg_logits.shape == (128, 128)
            mean = mean + out.seg_logits.data.softmax(0) / len(shapes)
    assert merged_pred.shape == (128, 128)
    assert torch.equal(merged_pred, mean.argmax(0))
    assert merged.gt_sem_seg.shape == (128, 128)  # what IoUMetric scores
