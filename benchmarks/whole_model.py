"""Whole-model inference, seconds per image: mmswin's configs vs mmdet's and
mmseg's own Swin configs.

    python benchmarks/whole_model.py [--device cuda] [--dtype all] [--runs 3]

Mask R-CNN Swin-T on one 800x1333 image and UperNet Swin-T on one 512x512
image, each through ``model.test_step`` (data preprocessor, backbone, neck,
heads, post-processing). Random weights (no checkpoint is loaded), but the
same ones in both models: mmswin's model loads the OpenMMLab model's
weights, its backbone through ``from_openmmlab``, so both do the same work
(the same proposals and detections). A 4096^3 matmul is timed in the same
interleaved repeats (``--matmul-size``; 0 leaves it out): its GFLOP/s is
the machine's speed at the time. ``--runs N`` repeats everything in N
fresh processes and reports the median and min-max over them. Writes
``benchmarks/results/whole_model.json``.
"""
import argparse
import copy
import os
import sys
from typing import Dict, List

import torch
from common import (
    add_common_args,
    add_matmul_arg,
    autocast,
    dtype_names,
    format_table,
    machine,
    report_runs,
    setup,
    summarize,
    time_with_matmul,
    write_json,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PAIRS = {
    'Mask R-CNN Swin-T, 800x1333': dict(
        scope='mmdet', image=(800, 1333),
        mmswin='configs/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-1x_coco.py',
        openmmlab='swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'),
    'UperNet Swin-T, 512x512': dict(
        scope='mmseg', image=(512, 512),
        mmswin='configs/upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py',
        openmmlab='swin/swin-tiny-patch4-window7-in1k-pre_upernet_'
        '8xb2-160k_ade20k-512x512.py'),
}


def package_config(scope: str, relative: str) -> str:
    """Path of a config shipped inside the mmdet / mmseg package."""
    package = __import__(scope)
    return os.path.join(os.path.dirname(package.__file__), '.mim', 'configs',
                        relative)


def build_model(config_path: str, scope: str,
                device: torch.device) -> torch.nn.Module:
    """The config's model with random weights (pretraining links removed),
    SyncBN reverted to BN, in eval mode."""
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    if not os.path.exists(config_path):
        raise FileNotFoundError(f'config {config_path} does not exist')
    cfg = Config.fromfile(config_path)
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pop('init_cfg', None)
    model_cfg.backbone.pop('pretrained', None)
    model_cfg.pop('pretrained', None)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.to(device)
    model.eval()
    return model


def share_weights(source: torch.nn.Module,
                  target: torch.nn.Module) -> None:
    """Load an OpenMMLab Swin model's weights into the mmswin one (strict:
    the two configs must describe the same model)."""
    from mmswin.checkpoint.layouts import from_openmmlab
    state = source.state_dict()
    backbone = {k[len('backbone.'):]: v for k, v in state.items()
                if k.startswith('backbone.')}
    merged = {k: v for k, v in state.items()
              if not k.startswith('backbone.')}
    merged.update({f'backbone.{k}': v
                   for k, v in from_openmmlab(backbone).items()})
    target.load_state_dict(merged, strict=True)


def test_batch(scope: str, image: tuple, device: torch.device) -> dict:
    """One random uint8 image and its data sample, as a dataloader gives."""
    height, width = image
    pixels = torch.randint(0, 256, (3, height, width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    meta = dict(img_shape=image, ori_shape=image, scale_factor=(1., 1.),
                img_path='random.jpg')
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample as Sample
    else:
        from mmseg.structures import SegDataSample as Sample
    return dict(inputs=[pixels.to(device)], data_samples=[Sample(
        metainfo=meta)])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(PAIRS),
                        choices=list(PAIRS))
    add_matmul_arg(parser)
    args = add_common_args(parser).parse_args(argv)
    if args.runs > 1:
        return report_runs('whole_model', __file__, argv, args, ['speedup'],
                           keys=('model', 'dtype', 'config'))
    device = setup(args)
    rows: List[dict] = []
    for title in args.models:
        pair = PAIRS[title]
        theirs = build_model(package_config(pair['scope'],
                                            pair['openmmlab']),
                             pair['scope'], device)
        ours = build_model(os.path.join(ROOT, pair['mmswin']),
                           pair['scope'], device)
        share_weights(theirs, ours)
        models: Dict[str, torch.nn.Module] = {
            'mmswin config': ours, f"{pair['scope']} config": theirs}
        for dtype_name in dtype_names(args):
            batch = test_batch(pair['scope'], pair['image'], device)

            def run(model, batch=batch, dtype_name=dtype_name):
                with torch.no_grad(), autocast(device, dtype_name):
                    return model.test_step(batch)

            times, matmul = time_with_matmul(
                {name: (lambda m=m: run(m)) for name, m in models.items()},
                device, args)
            base = summarize(times[f"{pair['scope']} config"])['median_s']
            for name, runs in times.items():
                stats = summarize(runs)
                is_mm = bool(matmul) and name == matmul[0]
                rows.append(dict(
                    model=title, config=name, dtype=dtype_name, **stats,
                    seconds_per_image=None if is_mm else stats['median_s'],
                    speedup=None if is_mm else base / stats['median_s'],
                    gflops_per_s=matmul[1] / stats['median_s'] / 1e9 if is_mm
                    else None))
            print(f'done {title} {dtype_name}', file=sys.stderr)
    table = format_table(
        ['model', 'dtype', 'config', 's / image', 'speed-up', 'spread',
         'CPU s', 'GFLOP/s'],
        [(r['model'], r['dtype'], r['config'], r['seconds_per_image'],
          r['speedup'], r['spread'], r['cpu_median_s'], r['gflops_per_s'])
         for r in rows])
    print(table)
    payload = dict(benchmark='whole_model', machine=machine(device),
                   args=vars(args), rows=rows, table=table)
    print('wrote', write_json('whole_model', payload, args.out))
    return payload


if __name__ == '__main__':
    main()
