"""Export an mmdet or mmseg config's model to ONNX and check it.

    python tools/deployment/export_onnx.py CONFIG [CHECKPOINT] --out FILE
        [--shape H W] [--dynamic] [--verify N] [--part full|features]
        [--atol A] [--allow-partial] [--cfg-options KEY=VALUE ...]

What is exported (``--part full``, the default): for an mmseg config the
segmentation logits ``(B, classes, H, W)``; for an mmdet two-stage detector
(Mask R-CNN, Cascade Mask R-CNN, Faster R-CNN) per image ``num_dets (B,)``
and ``boxes, scores, labels[, masks]`` padded to ``(B, K, ...)``, ``K`` the
config's ``test_cfg.rcnn.max_per_img``. ``--part features`` exports the
backbone and neck. The graph takes ``images`` ``(B, 3, H, W)`` float pixels
as the test pipeline loads them (normalisation and padding run inside) and,
for the detector, ``image_sizes`` ``(B, 2)`` int64, each image's ``(h, w)``
in a batch of mixed sizes (see ``mmswin.deploy.pack_images``).
``--dynamic`` makes batch, height and width dynamic.

``--verify N`` then runs the file with ONNX Runtime, and OpenVINO if
installed, on N random input shapes (sides that are mostly not multiples of
4, 7 or 32; for the detector, batches of images of mixed sizes), prints each
output's largest difference from PyTorch, and the latency of PyTorch
(eager, CPU) and each runtime at the export shape. The exit status is 1 if a
difference exceeds ``--atol`` or a runtime returns another number of
detections or other labels.
"""
import argparse
import os
import os.path as osp
import sys
import time
from functools import partial
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from checkpoint_utils import add_allow_partial, load_checked  # noqa: E402
from tool_utils import (  # noqa: E402
    DictAction,
    check_checkpoint,
    fail,
    load_config,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export an mmdet/mmseg model to ONNX, then check ONNX '
        'Runtime (and OpenVINO) against PyTorch')
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='weights (default: random, nothing downloaded)')
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument('--shape', type=int, nargs=2, default=(512, 512),
                        metavar=('H', 'W'), help='export input size')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic batch, height and width')
    parser.add_argument('--verify', type=int, default=0, metavar='N',
                        help='check the runtimes on N random shapes')
    parser.add_argument('--part', choices=('full', 'features'),
                        default='full', help='whole model or backbone+neck')
    parser.add_argument('--atol', type=float, default=1e-3,
                        help='largest accepted difference from PyTorch')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    add_allow_partial(parser, 'export')
    return parser.parse_args(argv)


def verify_inputs(wrapper: torch.nn.Module, kind: str, shape,
                  seed: int) -> Dict[str, np.ndarray]:
    """Random graph inputs of ``shape`` ``(B, 3, H, W)``. For the detector,
    a batch of mixed sizes: the first image fills the batch, the others
    are smaller, packed as :func:`mmswin.deploy.pack_images` packs them."""
    from mmswin.deploy import pack_images
    from mmswin.deploy.export import MIN_SIDE
    from mmswin.deploy.runtime import random_images
    if kind != 'detection':
        return dict(images=random_images(shape, seed))
    batch, _, height, width = shape
    rng = np.random.default_rng(seed)
    sizes = [(height, width)] + [
        (int(rng.integers(min(MIN_SIDE[kind], height), height + 1)),
         int(rng.integers(min(MIN_SIDE[kind], width), width + 1)))
        for _ in range(batch - 1)]
    images = [random_images((3, h, w), seed + i)
              for i, (h, w) in enumerate(sizes)]
    packed, image_sizes = pack_images(images, wrapper.preprocess)
    return dict(images=packed, image_sizes=image_sizes)


def verify(wrapper: torch.nn.Module, path: str, names, kind: str,
           shape, dynamic: bool, count: int, atol: float, seed: int) -> bool:
    """Print the parity table and latencies; True if every runtime agrees
    with PyTorch within ``atol``."""
    from mmswin.deploy.export import MIN_SIDE
    from mmswin.deploy.runtime import (
        BACKENDS,
        make_runner,
        max_abs_diffs,
        median_seconds,
        random_shapes,
    )

    def reference(inputs: Dict[str, np.ndarray]) -> List[np.ndarray]:
        with torch.no_grad():
            out = wrapper(*(torch.from_numpy(x) for x in inputs.values()))
        out = out if isinstance(out, (tuple, list)) else (out, )
        return [o.numpy() for o in out]

    runners = []
    for backend in BACKENDS:
        try:
            runners.append(make_runner(path, backend))
        except ImportError:  # that runtime is not installed
            continue
    if not dynamic:
        shapes = [(1, 3, *shape)] * count
    else:
        shapes = random_shapes(count, shape, MIN_SIDE[kind], 3, seed)
    print(f'\nparity with PyTorch (max abs diff; |PyTorch| max in brackets)'
          f', tolerance {atol:g}:')
    ok = True
    for index, batch_shape in enumerate(shapes):
        inputs = verify_inputs(wrapper, kind, batch_shape, seed + index)
        expected = reference(inputs)
        for runner in runners:
            outputs = runner(inputs)
            diffs = max_abs_diffs(expected, [outputs[n] for n in names],
                                  names)
            cells = []
            for name, ref in zip(names, expected):
                ok &= diffs[name] <= atol
                scale = float(np.abs(ref).max()) if ref.size else 0.0
                cells.append(f'{name} {diffs[name]:.2e} [{scale:.3g}]')
            print(f'  {"x".join(map(str, batch_shape)):<16} '
                  f'{runner.backend:<12} ' + '  '.join(cells))
    inputs = verify_inputs(wrapper, kind, (1, 3, *shape), seed)
    latency: Dict[str, float] = {
        'pytorch': median_seconds(partial(reference, inputs))}
    for runner in runners:
        latency[runner.backend] = median_seconds(partial(runner, inputs))
    print(f'\nlatency at 1x3x{shape[0]}x{shape[1]} (median of 5, '
          f'{torch.get_num_threads()} threads):')
    for name, seconds in latency.items():
        print(f'  {name:<12} {seconds * 1000:9.1f} ms  '
              f'({latency["pytorch"] / seconds:.2f}x PyTorch)')
    print('verify: ' + ('ok' if ok else 'FAILED'))
    return ok


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        fail(f'config file not found: {args.config}')
    if args.checkpoint is not None:
        check_checkpoint(args.checkpoint)
    try:
        from mmswin.deploy.export import (
            build_model,
            export_onnx,
            kind_of,
            make_wrapper,
        )
    except ImportError as error:
        fail(f'{error}; install the deploy extra: pip install -e ".[deploy]"')
    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(args.seed)
    try:
        model = build_model(cfg)
        if args.checkpoint is not None:
            load_checked(model, args.checkpoint, args.allow_partial, 'export')
        wrapper = make_wrapper(model, args.part)
        images = torch.rand(1, 3, *args.shape) * 255
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        start = time.perf_counter()
        names = export_onnx(wrapper, images, args.out, dynamic=args.dynamic)
    except (NotImplementedError, ValueError) as error:
        fail(str(error))
    kind = kind_of(wrapper)
    print(f'exported {kind} ({args.part}) to {args.out} in '
          f'{time.perf_counter() - start:.0f} s '
          f'({osp.getsize(args.out) / 2**20:.1f} MiB), outputs '
          f'{", ".join(names)}, input images 1x3x{args.shape[0]}x'
          f'{args.shape[1]}{" (dynamic)" if args.dynamic else ""}')
    if args.verify <= 0:
        return 0
    ok = verify(wrapper, args.out, names, kind, tuple(args.shape),
                args.dynamic, args.verify, args.atol, args.seed)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
