"""Deployment latency on the CPU: PyTorch, ONNX Runtime and OpenVINO at
fp32, bf16 and int8 (issue 20, item 6).

    python benchmarks/deploy_latency.py [--threads 2] [--repeats 3]
        [--batches 1 4] [--models det seg] [--paths ...] [--quick]
        [--runs 3] [--allocators glibc tcmalloc]

Models (paper configs, random weights): Swin-T + FPN of the Mask R-CNN
config (``--part features``) at 800x1344, and the whole UperNet Swin-T at
512x512, each at every batch of ``--batches``. Paths: PyTorch eager fp32
and bf16 autocast (mmswin's CPU fast path); ONNX Runtime fp32 and int8
(QDQ); OpenVINO f32, bf16 and int8 (NNCF). The exports (dynamic batch and
sides) and int8 models are cached in ``--cache`` (the exports take ~75 s
each); int8 is calibrated on random images, which changes no speed.
Repeats are interleaved; each cell is the median with the min-max spread.

The allocator is whatever the process runs with (glibc, or jemalloc /
tcmalloc in ``LD_PRELOAD``); each row names it. ``--allocators glibc
tcmalloc`` measures them side by side: every run is one fresh process per
allocator, each started with its library in ``LD_PRELOAD`` and
``TBB_ENABLE_SANITIZERS=1`` (without it OpenVINO's TBB loads hwloc with
``RTLD_DEEPBIND``, which frees the preloaded allocator's memory with
glibc's ``free`` and kills the process; set here too when ``LD_PRELOAD``
names an allocator). ``--runs N`` reports the median and min-max over N
such runs, with a 4096^3 matmul timed alongside (``--matmul-size``).
``--quick``: batch 1 only, for a re-run in a few minutes. Writes
``benchmarks/results/deploy_latency.json`` (with the table).
"""
import argparse
import gc
import glob
import os
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from common import (
    add_common_args,
    add_matmul_arg,
    format_table,
    machine,
    report_runs,
    setup,
    summarize,
    time_with_matmul,
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
PATHS = ('PyTorch eager fp32', 'PyTorch eager bf16 autocast',
         'ONNX Runtime fp32', 'ONNX Runtime int8', 'OpenVINO f32',
         'OpenVINO bf16', 'OpenVINO int8')
# Debian's packages: libtcmalloc-minimal4, libjemalloc2.
ALLOCATOR_LIBS = {'tcmalloc': ('libtcmalloc_minimal.so.4',
                               'libtcmalloc.so.4'),
                  'jemalloc': ('libjemalloc.so.2', )}
LIB_DIRS = ('/usr/lib/*-linux-gnu', '/usr/lib64', '/usr/lib',
            '/usr/local/lib')
BASELINE = PATHS[0]  # every ratio is to it


def allocator_label() -> str:
    """The allocator in ``LD_PRELOAD`` (jemalloc, tcmalloc), else glibc."""
    preload = os.environ.get('LD_PRELOAD', '')
    for name in ('jemalloc', 'tcmalloc'):
        if name in preload:
            return name
    return 'glibc'


def allocator_env(name: str) -> Dict[str, Optional[str]]:
    """Environment of a process that runs with allocator ``name``: its
    library in ``LD_PRELOAD`` (glibc: none) and ``TBB_ENABLE_SANITIZERS``,
    which makes oneTBB load hwloc without ``RTLD_DEEPBIND`` (see the module
    docstring)."""
    if name == 'glibc':
        return {'LD_PRELOAD': None}
    for lib in ALLOCATOR_LIBS[name]:
        for folder in LIB_DIRS:
            found = sorted(glob.glob(osp.join(folder, lib)))
            if found:
                return {'LD_PRELOAD': found[0], 'TBB_ENABLE_SANITIZERS': '1'}
    package = dict(tcmalloc='libtcmalloc-minimal4',
                   jemalloc='libjemalloc2')[name]
    raise SystemExit(f'--allocators {name}: none of '
                     f'{", ".join(ALLOCATOR_LIBS[name])} in '
                     f'{", ".join(LIB_DIRS)}; install it (Debian: apt-get '
                     f'install {package}) or leave {name} out')


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


def paths(wrapper, files, threads: int,
          wanted: Sequence[str] = PATHS) -> Dict[str, Callable]:
    """Each runtime and precision of ``wanted`` as ``fn(images ndarray)``."""
    from mmswin.deploy.runtime import make_runner

    def eager(dtype):
        def run(images):
            with torch.inference_mode(), torch.autocast(
                    'cpu', dtype=torch.bfloat16, enabled=dtype == 'bf16'):
                return wrapper(torch.from_numpy(images))
        return run

    runs = {label: eager(dtype) for label, dtype in (
        ('PyTorch eager fp32', 'fp32'),
        ('PyTorch eager bf16 autocast', 'bf16')) if label in wanted}
    for label, (path, backend, precision) in {
            'ONNX Runtime fp32': (files['fp32'], 'onnxruntime', 'fp32'),
            'ONNX Runtime int8': (files['ort_int8'], 'onnxruntime', 'fp32'),
            'OpenVINO f32': (files['fp32'], 'openvino', 'fp32'),
            'OpenVINO bf16': (files['fp32'], 'openvino', 'bf16'),
            'OpenVINO int8': (files['ov_int8'], 'openvino', 'fp32')}.items():
        if label not in wanted:
            continue
        runner = make_runner(path, backend, precision, threads)
        runs[label] = lambda images, r=runner: r(images=images)
    return runs


def path_groups(wanted: Sequence[str], batch: int) -> List[List[str]]:
    """The paths timed together. At batch 1 all of them, interleaved; at
    larger batches each path with the PyTorch fp32 baseline alone (its
    ratio from that pair), its runtime freed before the next: the seven
    runtimes' buffers at 4x3x800x1344 together outgrow a 24 GiB machine."""
    if batch == 1:
        return [list(wanted)]
    others = [p for p in wanted if p != BASELINE]
    return [[BASELINE, p] for p in others] or [[BASELINE]]


def side_by_side(rows: Sequence[dict], allocators: Sequence[str]) -> str:
    """One line per (model, input, path) with each allocator's median
    seconds (min-max over the runs) and the speed-up of each over the
    first allocator's median (``rows`` from ``spread_over_runs``)."""
    cells: Dict[tuple, Dict[str, dict]] = {}
    for row in rows:
        key = (row['model'], row['input'], row['path'])
        cells.setdefault(key, {})[row['allocator']] = row['median_s']
    lines = []
    for key, by_alloc in cells.items():
        first = by_alloc.get(allocators[0])
        line = list(key)
        for name in allocators:
            t = by_alloc.get(name)
            line.append(f"{t['median']:.3g} ({t['min']:.3g}-{t['max']:.3g})"
                        if t else '-')
        line += [first['median'] / by_alloc[name]['median']
                 if first and by_alloc.get(name) else None
                 for name in allocators[1:]]
        lines.append(line)
    return format_table(
        ['model', 'input', 'path', *[f'{a} s (min-max)' for a in allocators],
         *[f'{a} speed-up vs {allocators[0]}' for a in allocators[1:]]],
        lines)


def _cells(row: dict) -> list:
    return [row['model'], row['input'], row['path'], row['allocator'],
            row['median_s'], f"{row['min_s']:.3g}-{row['max_s']:.3g}",
            row['x_pytorch_fp32'], row['gflops_per_s']]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', choices=sorted(MODELS),
                        default=sorted(MODELS))
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 4])
    parser.add_argument('--paths', nargs='+', choices=PATHS, default=PATHS,
                        metavar='PATH', help='runtimes and precisions to '
                        f'time (default all: {", ".join(PATHS)})')
    parser.add_argument('--quick', action='store_true',
                        help='batch 1 only')
    parser.add_argument('--cache', default=osp.join(ROOT, 'work_dirs',
                                                    'deploy_latency'),
                        help='folder of the cached exports')
    parser.add_argument('--allocator', default=None,
                        help='label (default: from LD_PRELOAD)')
    parser.add_argument('--allocators', nargs='+', default=None,
                        choices=['glibc', *ALLOCATOR_LIBS],
                        help='measure each allocator in its own processes '
                        '(LD_PRELOAD), side by side')
    add_matmul_arg(parser)
    args = add_common_args(parser, repeats=3).parse_args(argv)
    if BASELINE not in args.paths:
        args.paths = [BASELINE, *args.paths]
    if args.allocators or args.runs > 1:
        allocators = args.allocators or [args.allocator or allocator_label()]
        variants = ([allocator_env(a) for a in args.allocators]
                    if args.allocators else [{}])
        payload = report_runs(
            'deploy_latency', __file__, argv, args,
            ['x_pytorch_fp32'], keys=('model', 'input', 'allocator', 'path'),
            variants=variants, strip=('--allocators', ))
        if len(allocators) > 1:
            payload['side_by_side'] = side_by_side(payload['rows'],
                                                   allocators)
            payload['table'] += '\n\n' + payload['side_by_side']
            print(payload['side_by_side'])
            print('wrote', write_json('deploy_latency', payload, args.out))
        return payload
    if allocator_label() != 'glibc':
        # Sets TBB_ENABLE_SANITIZERS before OpenVINO starts TBB: see the
        # module docstring.
        from mmswin.deploy.runtime import import_openvino
        import_openvino()
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
    rows: List[dict] = []
    headers = ['model', 'input', 'path', 'allocator', 'median s',
               'min-max s', 'x PyTorch fp32', 'GFLOP/s']
    for key in args.models:
        spec = MODELS[key]
        wrapper, files = prepare(key, args.cache)
        for batch in batches:
            images = np.random.default_rng(1).uniform(
                0, 255, (batch, 3, *spec['size'])).astype(np.float32)
            first = len(rows)
            for index, group in enumerate(path_groups(args.paths, batch)):
                runs = paths(wrapper, files, args.threads, group)
                times, matmul = time_with_matmul(
                    {label: (lambda fn=fn, x=images: fn(x))
                     for label, fn in runs.items()}, device, args)
                del runs  # free this group's runtimes and buffers
                gc.collect()
                base = summarize(times[BASELINE])['median_s']
                for label, t in times.items():
                    is_mm = bool(matmul) and label == matmul[0]
                    if index and (is_mm or label == BASELINE):
                        continue  # shown once per batch
                    stats = summarize(t)
                    rows.append(dict(
                        model=spec['name'], batch=batch, path=label,
                        input=f'{batch}x3x{spec["size"][0]}x'
                        f'{spec["size"][1]}', allocator=allocator, **stats,
                        max_s=max(t['wall']), x_pytorch_fp32=None if is_mm
                        else base / stats['median_s'],
                        gflops_per_s=matmul[1] / stats['median_s'] / 1e9
                        if is_mm else None))
            print(format_table(headers, [_cells(r) for r in rows[first:]]),
                  flush=True)
    table = format_table(headers, [_cells(r) for r in rows])
    payload = dict(benchmark='deploy_latency', machine=machine(device),
                   args=vars(args), allocator=allocator, rows=rows,
                   table=table)
    print(table)
    print('wrote', write_json('deploy_latency', payload, args.out))
    return payload


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
