"""``make export-demo``: export the toy detector and segmentor that the
demos trained, run ONNX Runtime on their val images, and draw ORT's
predictions beside PyTorch's.

    python tools/deployment/export_demo.py [--out work_dirs/export_demo]
        [--det-work-dir work_dirs/demo] [--seg-work-dir work_dirs/toy_seg]

For each model: ``model.onnx`` (dynamic height and width), and per val image
one PNG, PyTorch's prediction (left) beside ONNX Runtime's (right), in
``OUT/det`` and ``OUT/seg``. PyTorch's side is the model's own test step
(``model.test_step``, results in original image pixels); ORT's side is the
exported graph plus mmswin.deploy's post-processing (box rescaling, mask
pasting; mmseg's ``postprocess_result``). Printed per model: detections
whose count or labels differ, the largest box / score / logit difference,
and the pixel agreement of masks and label maps. Exit status 1 if boxes
differ by more than 1e-3 or detections or labels differ.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tool_utils import fail, load_config  # noqa: E402

DET_CONFIG = 'configs/toy/mask-rcnn_swin-toy_fpn_toy-coco.py'
SEG_CONFIG = 'configs/toy/upernet_swin-toy_toy-ade.py'
BOX_TOLERANCE = 1e-3


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/export_demo')
    parser.add_argument('--det-config', default=DET_CONFIG)
    parser.add_argument('--det-work-dir', default='work_dirs/demo')
    parser.add_argument('--seg-config', default=SEG_CONFIG)
    parser.add_argument('--seg-work-dir', default='work_dirs/toy_seg')
    parser.add_argument('--limit', type=int, default=None,
                        help='use the first N val images only')
    return parser.parse_args(argv)


def last_checkpoint(work_dir: str) -> str:
    """The checkpoint named by ``work_dir/last_checkpoint``."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        fail(f'no trained model in {work_dir} ({marker} is missing); run '
             '`make demo` / `make demo-seg` first')
    with open(marker) as f:
        return f.read().strip()


def val_items(cfg, limit: Optional[int]):
    """The val dataset's items (inputs as the test pipeline makes them)."""
    from mmengine.registry import DATASETS
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return [dataset[i] for i in range(count)]


def side_by_side(visualizer, item, left, right, out_file: str) -> None:
    """Draw ``left`` and ``right`` predictions on the item's image."""
    import mmcv
    image = mmcv.imread(item['data_samples'].img_path, channel_order='rgb')
    drawings = []
    for sample in (left, right):
        visualizer.add_datasample('prediction', image, data_sample=sample,
                                  draw_gt=False, show=False)
        drawings.append(visualizer.get_image())
    gap = np.full((image.shape[0], 8, 3), 255, np.uint8)
    mmcv.imwrite(np.concatenate([drawings[0], gap, drawings[1]], 1)[
        ..., ::-1], out_file)


def export_model(config: str, work_dir: str, out_dir: str, shape):
    """Build the trained model, export it, open it with ORT."""
    from mmswin.deploy.export import build_model, export_onnx, make_wrapper
    from mmswin.deploy.runtime import OrtRunner, random_images
    cfg = load_config(config)
    model = build_model(cfg, last_checkpoint(work_dir))
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, 'model.onnx')
    names = export_onnx(make_wrapper(model),
                        torch.from_numpy(random_images((1, 3, *shape))),
                        path)
    print(f'exported {config} to {path} ({", ".join(names)})', flush=True)
    return cfg, model, OrtRunner(path)


def visualizer_for(cfg, model):
    from mmengine.registry import VISUALIZERS
    visualizer = VISUALIZERS.build(dict(cfg.visualizer, name='export_demo'))
    visualizer.dataset_meta = model.dataset_meta if hasattr(
        model, 'dataset_meta') else None
    return visualizer


def detector_demo(args) -> Dict[str, float]:
    """Toy Mask R-CNN: PyTorch vs ORT on every val image."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from mmswin.deploy.postprocess import paste_masks, rescale_boxes
    out_dir = osp.join(args.out, 'det')
    cfg, model, runner = export_model(args.det_config, args.det_work_dir,
                                      out_dir, (160, 160))
    visualizer = visualizer_for(cfg, model)
    visualizer.dataset_meta = dict(cfg.metainfo)
    stats = dict(images=0, mismatched=0, box=0.0, score=0.0, mask=1.0)
    threshold = cfg.model.test_cfg.rcnn.mask_thr_binary
    for item in val_items(cfg, args.limit):
        sample = item['data_samples']
        with torch.no_grad():
            expected = model.test_step(dict(
                inputs=[item['inputs']], data_samples=[sample]))[0]
        boxes, scores, labels, masks = (torch.from_numpy(o) for o in runner(
            item['inputs'].float()[None].numpy()))
        boxes = rescale_boxes(boxes, sample.scale_factor)
        got = InstanceData(bboxes=boxes, scores=scores, labels=labels,
                           masks=paste_masks(masks, boxes, sample.ori_shape,
                                             threshold))
        ref = expected.pred_instances
        stats['images'] += 1
        if len(ref) != len(got) or not torch.equal(ref.labels, got.labels):
            stats['mismatched'] += 1
        elif len(ref):
            stats['box'] = max(stats['box'], float(
                (ref.bboxes - got.bboxes).abs().max()))
            stats['score'] = max(stats['score'], float(
                (ref.scores - got.scores).abs().max()))
            stats['mask'] = min(stats['mask'], float(
                (ref.masks == got.masks).float().mean()))
        result = DetDataSample(metainfo=sample.metainfo)
        result.pred_instances = got
        side_by_side(visualizer, item, expected, result, osp.join(
            out_dir, osp.splitext(osp.basename(sample.img_path))[0] +
            '.png'))
    print(f'detector, {stats["images"]} val images: detections differing in '
          f'count or labels on {stats["mismatched"]}; max |box diff| '
          f'{stats["box"]:.2e} px, max |score diff| {stats["score"]:.2e}, '
          f'mask pixel agreement >= {stats["mask"]:.4f}; PNGs (PyTorch | '
          f'ONNX Runtime) in {out_dir}/')
    return stats


def segmentor_demo(args) -> Dict[str, float]:
    """Toy UperNet: PyTorch vs ORT on every val image."""
    out_dir = osp.join(args.out, 'seg')
    cfg, model, runner = export_model(args.seg_config, args.seg_work_dir,
                                      out_dir, (128, 256))
    visualizer = visualizer_for(cfg, model)
    visualizer.dataset_meta = dict(classes=cfg.metainfo['classes'],
                                   palette=cfg.metainfo['palette'])
    stats = dict(images=0, logit=0.0, agreement=1.0)
    for item in val_items(cfg, args.limit):
        sample = item['data_samples']
        with torch.no_grad():
            expected = model.test_step(dict(
                inputs=[item['inputs']], data_samples=[sample]))[0]
            logits = torch.from_numpy(runner(
                item['inputs'].float()[None].numpy())[0])
            got = model.postprocess_result(logits, [sample.clone()])[0]
        stats['images'] += 1
        stats['logit'] = max(stats['logit'], float(
            (expected.seg_logits.data - got.seg_logits.data).abs().max()))
        stats['agreement'] = min(stats['agreement'], float(
            (expected.pred_sem_seg.data == got.pred_sem_seg.data
             ).float().mean()))
        side_by_side(visualizer, item, expected, got, osp.join(
            out_dir, osp.splitext(osp.basename(sample.img_path))[0] +
            '.png'))
    print(f'segmentor, {stats["images"]} val images: max |logit diff| '
          f'{stats["logit"]:.2e}, label agreement >= '
          f'{stats["agreement"]:.5f}; PNGs (PyTorch | ONNX Runtime) in '
          f'{out_dir}/')
    return stats


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    det = detector_demo(args)
    segmentor_demo(args)
    ok = det['mismatched'] == 0 and det['box'] <= BOX_TOLERANCE
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
