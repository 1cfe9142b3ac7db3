"""``make export-demo``: export the toy detector and segmentor that the
demos trained, compare ONNX Runtime with PyTorch image by image (pictures
side by side), then evaluate every runtime and precision on the val set.

    python tools/deployment/export_demo.py [--out work_dirs/export_demo]
        [--det-work-dir work_dirs/demo] [--seg-work-dir work_dirs/toy_seg]
        [--limit N] [--calib N] [--repeats N]

For each model: ``model.onnx`` (dynamic batch, height and width), and per
val image one PNG, PyTorch's prediction (left) beside ONNX Runtime's
(right), in ``OUT/det`` and ``OUT/seg``. PyTorch's side is the model's own
``test_step``; ONNX Runtime's is :class:`mmswin.deploy.BackendModel` (the
graph plus the host's box rescaling, mask pasting and mmseg's
post-processing). Printed per model: detections whose count or labels
differ, the largest box / score / logit difference, the pixel agreement of
masks and label maps.

It ends with one table: PyTorch, ONNX Runtime fp32, OpenVINO fp32 and bf16,
and the int8 model of ``tools/deployment/quantize.py CONFIG MODEL.onnx
--calib N --out FILE``, each with the config's own metrics on the val set
(``tools/test.py``'s evaluator; :func:`mmswin.deploy.evaluate_exported`)
and its latency per image (median of ``--repeats`` calls on the first val
image, batch 1, pipeline output to data sample). Exit status 1 if boxes
differ by more than 1e-3 px or detections or labels differ.
"""
import argparse
import copy
import os
import os.path as osp
import subprocess
import sys
from functools import partial
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tool_utils import build_runner, fail, load_config  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = 'configs/toy/mask-rcnn_swin-toy_fpn_toy-coco.py'
SEG_CONFIG = 'configs/toy/upernet_swin-toy_toy-ade.py'
BOX_TOLERANCE = 1e-3
METRICS = {'bbox mAP': 'coco/bbox_mAP', 'segm mAP': 'coco/segm_mAP',
           'mIoU': 'mIoU'}
QUANTIZE_TOOL = osp.join(ROOT, 'tools', 'deployment', 'quantize.py')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/export_demo')
    parser.add_argument('--det-config', default=DET_CONFIG)
    parser.add_argument('--det-work-dir', default='work_dirs/demo')
    parser.add_argument('--seg-config', default=SEG_CONFIG)
    parser.add_argument('--seg-work-dir', default='work_dirs/toy_seg')
    parser.add_argument('--limit', type=int, default=None,
                        help='use the first N val images only')
    parser.add_argument('--calib', type=int, default=32,
                        help='int8 calibration images')
    parser.add_argument('--repeats', type=int, default=10,
                        help='latency: median of this many calls')
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


def export_model(config: str, work_dir: str, out_dir: str):
    """Build the trained model, export it (dynamic batch and sides, with
    mmswin's metadata)."""
    from mmswin.deploy.export import build_model, export_onnx, make_wrapper
    cfg = load_config(config)
    checkpoint = last_checkpoint(work_dir)
    model = build_model(cfg, checkpoint)
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, 'model.onnx')
    names = export_onnx(make_wrapper(model), torch.rand(1, 3, 160, 160) * 255,
                        path)
    print(f'exported {config} to {path} ({", ".join(names)})', flush=True)
    return cfg, checkpoint, build_model(cfg, checkpoint), path


def visualizer_for(cfg):
    from mmengine.registry import VISUALIZERS
    visualizer = VISUALIZERS.build(dict(cfg.visualizer, name='export_demo'))
    visualizer.dataset_meta = dict(classes=cfg.metainfo['classes'],
                                   palette=cfg.metainfo['palette'])
    return visualizer


def compare(cfg, model, path: str, out_dir: str, limit: Optional[int],
            task: str) -> Dict[str, float]:
    """PyTorch vs ONNX Runtime on every val image; pictures side by side.
    """
    from mmswin.deploy import BackendModel
    exported = BackendModel(cfg, path, 'onnxruntime')
    visualizer = visualizer_for(cfg)
    stats = dict(images=0, mismatched=0, box=0.0, score=0.0, mask=1.0,
                 logit=0.0, agreement=1.0)
    for item in val_items(cfg, limit):
        sample = item['data_samples']
        with torch.no_grad():
            ref = model.test_step(dict(inputs=[item['inputs']],
                                       data_samples=[sample.clone()]))[0]
        got = exported.predict([item['inputs']], [sample.clone()])[0]
        stats['images'] += 1
        if task == 'segmentation':
            stats['logit'] = max(stats['logit'], float(
                (ref.seg_logits.data - got.seg_logits.data).abs().max()))
            stats['agreement'] = min(stats['agreement'], float(
                (ref.pred_sem_seg.data == got.pred_sem_seg.data
                 ).float().mean()))
        else:
            a, b = ref.pred_instances, got.pred_instances
            if len(a) != len(b) or not torch.equal(a.labels, b.labels):
                stats['mismatched'] += 1
            elif len(a):
                stats['box'] = max(stats['box'], float(
                    (a.bboxes - b.bboxes).abs().max()))
                stats['score'] = max(stats['score'], float(
                    (a.scores - b.scores).abs().max()))
                stats['mask'] = min(stats['mask'], float(
                    (a.masks == b.masks).float().mean()))
        side_by_side(visualizer, item, ref, got, osp.join(
            out_dir, osp.splitext(osp.basename(sample.img_path))[0] +
            '.png'))
    if task == 'segmentation':
        print(f'segmentor, {stats["images"]} val images: max |logit diff| '
              f'{stats["logit"]:.2e}, label agreement >= '
              f'{stats["agreement"]:.5f}; PNGs (PyTorch | ONNX Runtime) in '
              f'{out_dir}/')
    else:
        print(f'detector, {stats["images"]} val images: detections '
              f'differing in count or labels on {stats["mismatched"]}; max '
              f'|box diff| {stats["box"]:.2e} px, max |score diff| '
              f'{stats["score"]:.2e}, mask pixel agreement >= '
              f'{stats["mask"]:.4f}; PNGs (PyTorch | ONNX Runtime) in '
              f'{out_dir}/')
    return stats


def quantized(config: str, path: str, calib: int) -> Optional[str]:
    """The int8 model of tools/deployment/quantize.py, None (with a note)
    where that tool is missing or fails."""
    if not osp.isfile(QUANTIZE_TOOL):
        print(f'int8: {QUANTIZE_TOOL} is not there; no int8 row')
        return None
    out = osp.splitext(path)[0] + '_int8.xml'
    done = subprocess.run([sys.executable, QUANTIZE_TOOL, config, path,
                           '--calib', str(calib), '--out', out])
    if done.returncode != 0 or not osp.isfile(out):
        print(f'int8: quantize.py failed (exit {done.returncode}); no int8 '
              'row')
        return None
    return out


def table_rows(config: str, cfg, checkpoint: str, model, path: str,
               args, task: str) -> List[Dict]:
    """PyTorch and each runtime/precision: metrics and latency."""
    from mmswin.deploy import BackendModel, evaluate_exported
    from mmswin.deploy.runtime import median_seconds
    # the metrics table only: mmengine's per-run logs at WARNING
    options = dict(log_level='WARNING', **(
        {'test_dataloader.dataset.indices': args.limit} if args.limit
        else {}))
    threads = torch.get_num_threads()  # every runtime as many as PyTorch
    item = val_items(cfg, 1)[0]
    batch = dict(inputs=[item['inputs']], data_samples=[item['data_samples']])
    pytorch_cfg = copy.deepcopy(cfg)
    pytorch_cfg.merge_from_dict(dict(
        options, load_from=checkpoint, visualizer=dict(
            cfg.visualizer, name=f'export_demo_{task}'),
        work_dir=osp.join(args.out, 'pytorch_' + task)))
    with torch.no_grad():
        rows = [dict(runtime='PyTorch', precision='fp32',
                     metrics=build_runner(pytorch_cfg).test(),
                     seconds=median_seconds(partial(model.test_step, batch),
                                            args.repeats))]
    runs = [('onnxruntime', 'fp32', path), ('openvino', 'fp32', path),
            ('openvino', 'bf16', path)]
    int8 = quantized(config, path, args.calib)
    if int8:
        runs.append(('openvino' if int8.endswith('.xml') else 'onnxruntime',
                     'int8', int8))
    for backend, precision, model_file in runs:
        run_precision = 'fp32' if precision == 'int8' else precision
        exported = BackendModel(cfg, model_file, backend, run_precision,
                                threads)
        rows.append(dict(
            runtime={'onnxruntime': 'ONNX Runtime',
                     'openvino': 'OpenVINO'}[backend],
            precision=precision if exported.precision == run_precision
            else f'{precision} (ran fp32)',
            metrics=evaluate_exported(cfg, model_file, backend,
                                      run_precision, options, threads),
            seconds=median_seconds(partial(
                exported.predict, batch['inputs'],
                [s.clone() for s in batch['data_samples']]), args.repeats)))
    return rows


def print_table(rows: List[Dict]) -> None:
    """One markdown table of every model and runtime."""
    header = ['model', 'runtime', 'precision', *METRICS, 'ms / image']
    print('\n| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in rows:
        cells = [row['model'], row['runtime'], row['precision']]
        for key in METRICS.values():
            value = row['metrics'].get(key)
            # mmdet's mAPs are fractions, mmseg's mIoU a percentage
            scale = 100 if key.startswith('coco/') else 1
            cells.append('' if value is None else f'{value * scale:.1f}')
        cells.append(f'{row["seconds"] * 1000:.1f}')
        print('| ' + ' | '.join(cells) + ' |')
    print(f'\n({torch.get_num_threads()} threads in every runtime; latency: '
          'the first val image, batch 1, median)')


TASKS = {'detection': ('det_config', 'det_work_dir', 'det', 'toy Mask R-CNN'),
         'segmentation': ('seg_config', 'seg_work_dir', 'seg', 'toy UperNet')}


def task_rows(args, task: str) -> Tuple[List[Dict], bool]:
    """Export one toy model, compare it image by image, then its table
    rows; ``ok`` is False where the detector's detections differ."""
    config_key, work_dir_key, folder, name = TASKS[task]
    config = getattr(args, config_key)
    cfg, checkpoint, model, path = export_model(
        config, getattr(args, work_dir_key), osp.join(args.out, folder))
    stats = compare(cfg, model, path, osp.join(args.out, folder), args.limit,
                    task)
    ok = task != 'detection' or (stats['mismatched'] == 0 and
                                 stats['box'] <= BOX_TOLERANCE)
    rows = [dict(row, model=name) for row in table_rows(
        config, cfg, checkpoint, model, path, args, task)]
    return rows, ok


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # Both tasks in one process: this crashed with SIGSEGV before mmswin
    # kept the signal stack across OpenVINO's plugins (deploy/signal_stack).
    rows, ok = [], True
    for task in TASKS:
        task_result, task_ok = task_rows(args, task)
        rows += task_result
        ok = ok and task_ok
    print_table(rows)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
