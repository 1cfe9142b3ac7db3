"""Deployment latency on the CPU: PyTorch, ONNX Runtime and OpenVINO at
fp32, bf16 and int8 (issue 20, item 6).

    python benchmarks/deploy_latency.py [--threads 2] [--repeats 3]
        [--batches 1 4] [--models det seg] [--quick]

Models (paper configs, random weights): Swin-T + FPN of the Mask R-CNN
config (``--part features``) at 800x1344, and the whole UperNet Swin-T at
512x512, each at every batch of ``--batches``. Paths: PyTorch eager fp32
and bf16 autocast (mmswin's CPU fast path); ONNX Runtime fp32 and int8
(QDQ); OpenVINO f32, bf16 and int8 (NNCF). The exports (dynamic batch and
sides) and int8 models are cached in ``--cache`` (the exports take ~75 s
each); int8 is calibrated on random images, which changes no speed.
Repeats are interleaved; each cell is the median with the min-max spread.

The allocator is whatever the process runs with: run it once plainly and
once with ``LD_PRELOAD`` of jemalloc or tcmalloc; the table names the
allocator it used (``--allocator`` overrides the label). ``--quick``:
batch 1 only, for a re-run in a few minutes. Writes
``benchmarks/results/deploy_latency.json`` (with the table).
"""
import argparse
import os
import os.path as osp
import sys
from typing import Callable, Dict, List

import numpy as np
import torch
from common import (
    add_common_args,
    format_table,
    machine,
    setup,
    summarize,
    time_interleaved,
    write_json,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODELS = {
    'det': dict(name='Swin-T + FPN', part='features', size=(800, 1344),
                config='configs/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py'),
    'seg': dict(name='UperNet Swin-T', part='full', size=(512, 512),
                config='configs/'
                'upernet_swin-t-p4-w7_8xb2-160k_ade20k-512x512.py'),
}
CALIB = 2  # random images: int8 speed does not depend on them


def allocator_label() -> str:
    """The allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc), else glibc."""
    preload = os.environ.get('LD_PRELOAD', '')
    for name in ('jemalloc', 'tcmalloc'):
        if name in preload:
            return name
    return 'glibc'


def prepare(key: str, cache: str):
    """The model's PyTorch wrapper and its cached fp32/int8 files."""
    from mmengine.config import Config

    from mmswin.deploy.export import build_model, export_onnx, make_wrapper
    from mmswin.deploy.quantize import quantize_onnxruntime, quantize_openvino
    spec = MODELS[key]
    cfg = Config.fromfile(osp.join(ROOT, spec['config']))
    torch.manual_seed(0)
    wrapper = make_wrapper(build_model(cfg), spec['part']).eval()
    os.makedirs(cache, exist_ok=True)
    files = dict(fp32=osp.join(cache, f'{key}.onnx'),
                 ort_int8=osp.join(cache, f'{key}_int8.onnx'),
                 ov_int8=osp.join(cache, f'{key}_int8.xml'))
    if not osp.isfile(files['fp32']):
        print(f'exporting {spec["name"]} to {files["fp32"]} (~75 s)',
              flush=True)
        export_onnx(wrapper, torch.rand(1, 3, *spec['size']) * 255,
                    files['fp32'])
    rng = np.random.default_rng(0)
    feeds = [dict(images=rng.uniform(0, 255, (1, 3, *spec['size'])).astype(
        np.float32)) for _ in range(CALIB)]
    if not osp.isfile(files['ov_int8']):
        print('quantising with NNCF (OpenVINO)', flush=True)
        quantize_openvino(files['fp32'], feeds, files['ov_int8'])
    if not osp.isfile(files['ort_int8']):
        print('quantising with ONNX Runtime', flush=True)
        quantize_onnxruntime(files['fp32'], feeds, files['ort_int8'])
    return wrapper, files


def paths(wrapper, files, threads: int) -> Dict[str, Callable]:
    """Each runtime and precision as ``fn(images ndarray)``."""
    from mmswin.deploy.runtime import make_runner

    def eager(dtype):
        def run(images):
            with torch.inference_mode(), torch.autocast(
                    'cpu', dtype=torch.bfloat16, enabled=dtype == 'bf16'):
                return wrapper(torch.from_numpy(images))
        return run

    runs = {'PyTorch eager fp32': eager('fp32'),
            'PyTorch eager bf16 autocast': eager('bf16')}
    for label, (path, backend, precision) in {
            'ONNX Runtime fp32': (files['fp32'], 'onnxruntime', 'fp32'),
            'ONNX Runtime int8': (files['ort_int8'], 'onnxruntime', 'fp32'),
            'OpenVINO f32': (files['fp32'], 'openvino', 'fp32'),
            'OpenVINO bf16': (files['fp32'], 'openvino', 'bf16'),
            'OpenVINO int8': (files['ov_int8'], 'openvino', 'fp32')}.items():
        runner = make_runner(path, backend, precision, threads)
        runs[label] = lambda images, r=runner: r(images=images)
    return runs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS),
                        default=sorted(MODELS))
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 4])
    parser.add_argument('--quick', action='store_true',
                        help='batch 1 only')
    parser.add_argument('--cache', default=osp.join(ROOT, 'work_dirs',
                                                    'deploy_latency'),
                        help='folder of the cached exports')
    parser.add_argument('--allocator', default=None,
                        help='label (default: from LD_PRELOAD)')
    args = add_common_args(parser, repeats=3).parse_args(argv)
    device = setup(args)
    if device.type != 'cpu':  # make bench --device cuda: nothing to time
        table = 'deploy_latency measures the CPU; skipped on ' + args.device
        print(table)
        write_json('deploy_latency', dict(benchmark='deploy_latency',
                                          machine=machine(device),
                                          rows=[], table=table), args.out)
        return dict(table=table)
    allocator = args.allocator or allocator_label()
    batches = [1] if args.quick else args.batches
    rows: List[list] = []
    results = []
    for key in args.models:
        spec = MODELS[key]
        wrapper, files = prepare(key, args.cache)
        runs = paths(wrapper, files, args.threads)
        for batch in batches:
            images = np.random.default_rng(1).uniform(
                0, 255, (batch, 3, *spec['size'])).astype(np.float32)
            times = time_interleaved(
                {label: (lambda fn=fn, x=images: fn(x)) for label, fn in
                 runs.items()}, device, args.repeats, args.warmup)
            base = summarize(times['PyTorch eager fp32'])['median_s']
            for label, t in times.items():
                s = summarize(t)
                wall = t['wall']
                results.append(dict(model=spec['name'], batch=batch,
                                    path=label, allocator=allocator, **s))
                rows.append([spec['name'], f'{batch}x3x{spec["size"][0]}x'
                             f'{spec["size"][1]}', label, allocator,
                             s['median_s'], f'{min(wall):.3g}-'
                             f'{max(wall):.3g}', base / s['median_s']])
            print(format_table(['model', 'input', 'path', 'allocator',
                                'median s', 'min-max s', 'x PyTorch fp32'],
                               rows[-len(times):]), flush=True)
    table = format_table(['model', 'input', 'path', 'allocator', 'median s',
                          'min-max s', 'x PyTorch fp32'], rows)
    payload = dict(benchmark='deploy_latency', machine=machine(device),
                   args=vars(args), allocator=allocator, rows=results,
                   table=table)
    print(table)
    print('wrote', write_json('deploy_latency', payload, args.out))
    return payload


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
