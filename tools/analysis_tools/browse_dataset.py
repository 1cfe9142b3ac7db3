"""Draw a config's training samples after its pipeline, with their labels.

    python tools/analysis_tools/browse_dataset.py CONFIG
        [--output-dir DIR] [--not-show] [--show-interval S]
        [--max-images N] [--cfg-options KEY=VALUE ...]

Serves mmdet configs (boxes and masks) and mmseg configs (label maps)
alike: the config's visualizer draws what its dataset yields.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tool_utils import DictAction, check_dataset_paths, fail, load_config  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Browse a dataset')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--output-dir', help='save the drawings here')
    parser.add_argument('--not-show', action='store_true',
                        help='do not open a window')
    parser.add_argument('--show-interval', type=float, default=2,
                        help='seconds each window stays')
    parser.add_argument('--max-images', type=int, default=None,
                        help='stop after this many samples')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser.parse_args(argv)


def _gt_as_arrays(data_sample) -> None:
    """mmdet samples hold boxes and masks as structures; the visualizer
    draws tensors and boolean arrays."""
    gt = data_sample.get('gt_instances')
    if gt is None:
        return
    from mmdet.structures.bbox import BaseBoxes
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    if isinstance(gt.get('bboxes'), BaseBoxes):
        gt.bboxes = gt.bboxes.tensor
    if isinstance(gt.get('masks'), (BitmapMasks, PolygonMasks)):
        gt.masks = gt.masks.to_ndarray().astype(bool)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Draw the samples; returns the files written (with --output-dir)."""
    args = parse_args(argv)
    if args.not_show and not args.output_dir:
        fail('--not-show without --output-dir draws nothing; give '
             '--output-dir DIR')
    cfg = load_config(args.config, args.cfg_options)
    check_dataset_paths(cfg, ['train_dataloader'])
    from mmengine.registry import DATASETS, VISUALIZERS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    written = []
    count = len(dataset) if args.max_images is None else min(
        args.max_images, len(dataset))
    for index in range(count):
        item = dataset[index]
        sample = item['data_samples'].numpy()
        _gt_as_arrays(sample)
        # Pipelines yield BGR (3, H, W); the visualizer draws RGB (H, W, 3).
        image = np.ascontiguousarray(
            item['inputs'].permute(1, 2, 0).numpy()[..., ::-1])
        name = osp.basename(sample.img_path)
        out_file = None
        if args.output_dir:
            out_file = osp.join(args.output_dir,
                                osp.splitext(name)[0] + '.png')
            written.append(out_file)
        visualizer.add_datasample(
            name, image, sample, draw_pred=False, show=not args.not_show,
            wait_time=args.show_interval, out_file=out_file)
    print(f'{count} samples drawn' + (
        f' into {args.output_dir}' if args.output_dir else ''))
    return written


if __name__ == '__main__':
    main()
