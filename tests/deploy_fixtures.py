"""Session fixtures of the deployment tests (issue 20): the toy detector and
the toy segmentor, each as a config file, a checkpoint, a dynamic ONNX
export (with mmswin's metadata) and a small val set to evaluate on.

Random weights score ~0 mAP/mIoU on the toy shapes, which would make
"the exported model scores what PyTorch scores" trivially true. Training is
minutes. So each val set's annotations are the PyTorch model's own
predictions instead: the three best detections per image (boxes and masks),
or the predicted label map. PyTorch then scores near 100 and every wrong
box, mask or pixel of an exported model costs points; the controls in the
tests check that a wrong post-processing step does.

The models use two Swin stages (export time grows ~4x per stage; heads,
padding, windows and post-processing are the same at any depth), and
images that the test pipeline resizes (200 -> 160 px, 96 -> 128 px), so
the rescaling to the original image is exercised.
"""
import json
import os.path as osp
import shutil
from typing import NamedTuple

import numpy as np
import pytest
import torch
from helpers import ROOT, TOY_DET_CONFIG, TOY_SEG_CONFIG

# The toys' two Swin stages (also trained in tests/test_deploy_accuracy.py)
DET_MODEL = """
model = dict(
    backbone=dict(depths=(1, 1), strides=(4, 2), num_heads=(1, 2),
                  out_indices=(0, 1)),
    neck=dict(in_channels=[32, 64]))
"""
SEG_MODEL = """
model = dict(
    backbone=dict(depths=(1, 2), strides=(4, 2), num_heads=(1, 2),
                  out_indices=(0, 1)),
    decode_head=dict(in_channels=[32, 64], in_index=[0, 1]),
    auxiliary_head=dict(in_channels=64, in_index=1))
"""
DET_OVERRIDES = DET_MODEL + """
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root='{root}/'))
test_evaluator = dict(ann_file='{root}/annotations/val.json')
"""
SEG_OVERRIDES = SEG_MODEL + """
test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root='{root}'))
"""
DETECTIONS_PER_IMAGE = 3  # pseudo ground truth: the best three


class ExportedToy(NamedTuple):
    """A toy model ready for the deployment tests.

    Attributes:
        config: Config file (the toy config with two stages, pointing at
            ``data_root``; test batch size 1).
        checkpoint: Its weights (``state_dict``), for tools/test.py.
        onnx: The dynamic ``part='full'`` export of those weights.
        data_root: The val set (annotations: the model's predictions).
        model: The PyTorch model (eval mode).
    """
    config: str
    checkpoint: str
    onnx: str
    data_root: str
    model: torch.nn.Module


def _write_config(folder, base: str, overrides: str, root: str) -> str:
    path = str(folder / 'config.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = '{osp.join(ROOT, base)}'\n" +
                overrides.format(root=root))
    return path


def _predictions(model, cfg):
    """``model.test_step`` on each item of the config's test set."""
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.default_scope)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    with torch.no_grad():
        for index in range(len(dataset)):
            item = dataset[index]
            yield model.test_step(dict(inputs=[item['inputs']],
                                       data_samples=[item['data_samples']]))[0]


def _coco_annotations(model, cfg, ann_file: str) -> None:
    """Replace the images' annotations by the model's best detections."""
    import pycocotools.mask as mask_utils
    with open(ann_file) as f:
        coco = json.load(f)
    category_ids = [c['id'] for c in coco['categories']]
    annotations = []
    for sample in _predictions(model, cfg):
        best = sample.pred_instances[:DETECTIONS_PER_IMAGE]
        for box, label, mask in zip(best.bboxes.tolist(), best.labels,
                                    best.masks.numpy()):
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            rle['counts'] = rle['counts'].decode()
            x1, y1, x2, y2 = box
            annotations.append(dict(
                id=len(annotations) + 1, image_id=sample.img_id,
                category_id=category_ids[int(label)], iscrowd=0,
                bbox=[x1, y1, x2 - x1, y2 - y1], segmentation=rle,
                area=float(mask.sum())))
    coco['annotations'] = annotations
    with open(ann_file, 'w') as f:
        json.dump(coco, f)


def _ade_annotations(model, cfg) -> None:
    """Replace each label map by the model's prediction (+1: the config's
    reduce_zero_label maps file value k to class k - 1)."""
    import mmcv
    for sample in _predictions(model, cfg):
        labels = sample.pred_sem_seg.data[0].numpy().astype(np.uint8) + 1
        mmcv.imwrite(labels, sample.seg_map_path)


def _export(folder, cfg, checkpoint: str) -> str:
    """Export the checkpoint's model (dynamic sizes and batch) with
    mmswin's metadata."""
    from mmswin.deploy.export import build_model, export_onnx, make_wrapper
    model = build_model(cfg, checkpoint)
    path = str(folder / 'model.onnx')
    export_onnx(make_wrapper(model), torch.rand(1, 3, 160, 160) * 255, path)
    return path


def _toy(tmp_path_factory, make_data, base: str, overrides: str,
         task: str) -> ExportedToy:
    from mmengine.config import Config

    from mmswin.deploy.export import build_model
    folder = tmp_path_factory.mktemp(f'exported_{task}')
    root = str(folder / 'data')
    shutil.copytree(make_data(), root)
    config = _write_config(folder, base, overrides, root)
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    model = build_model(cfg)
    checkpoint = str(folder / 'model.pth')
    # the class names the APIs' init_detector / init_model read
    metainfo = cfg.test_dataloader.dataset.metainfo
    torch.save(dict(state_dict=model.state_dict(), meta=dict(
        dataset_meta=dict(classes=metainfo.classes,
                          palette=metainfo.palette))), checkpoint)
    if task == 'detection':
        _coco_annotations(model, cfg, cfg.test_evaluator.ann_file)
    else:
        _ade_annotations(model, cfg)
    return ExportedToy(config, checkpoint,
                       _export(folder, cfg, checkpoint), root, model)


@pytest.fixture(scope='session')
def exported_toy_detector(tmp_path_factory, make_toy_coco) -> ExportedToy:
    """The toy Mask R-CNN, exported, on 6 val images of 200x200 px."""
    return _toy(tmp_path_factory,
                lambda: make_toy_coco(seed=5, num_train=1, num_val=6,
                                      size=200),
                TOY_DET_CONFIG, DET_OVERRIDES, 'detection')


@pytest.fixture(scope='session')
def exported_toy_segmentor(tmp_path_factory, make_toy_ade) -> ExportedToy:
    """The toy UperNet, exported, on 6 val images of 96x96 px."""
    return _toy(tmp_path_factory,
                lambda: make_toy_ade(seed=5, num_train=1, num_val=6,
                                     size=96),
                TOY_SEG_CONFIG, SEG_OVERRIDES, 'segmentation')
