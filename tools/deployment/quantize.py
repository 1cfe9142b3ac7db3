"""int8 post-training quantisation of an exported model, calibrated on the
config's own dataset.

    python tools/deployment/quantize.py CONFIG MODEL.onnx --calib N
        --out FILE [--backend openvino|onnxruntime] [--split test|val]
        [--cfg-options KEY=VALUE ...]

Takes N images of the config's ``test_dataloader`` dataset (``--split
val``: ``val_dataloader``) through its pipeline, packs each as the graph
takes it, and quantises MODEL.onnx (exported by export_onnx.py) with:

- ``--backend openvino`` (default): NNCF with its transformer preset
  (LayerNorm, Softmax and GELU stay in floating point; matmuls and
  convolutions in int8), FILE an OpenVINO ``.xml`` (+ ``.bin``);
- ``--backend onnxruntime``: ONNX Runtime static quantisation (QDQ,
  per-channel int8 weights) of MatMul, Gemm and Conv, FILE an ``.onnx``.

Evaluate the result like any exported model:
``python tools/test.py CONFIG FILE --backend openvino``.
"""
import argparse
import os.path as osp
import sys
import time
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tool_utils import (  # noqa: E402
    DictAction,
    check_dataset_paths,
    fail,
    load_config,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='int8 post-training quantisation of an exported model, '
        "calibrated on the config's dataset")
    parser.add_argument('config', help='the mmdet/mmseg config it was '
                        'exported from')
    parser.add_argument('model', help='fp32 .onnx from export_onnx.py')
    parser.add_argument('--calib', type=int, default=32, metavar='N',
                        help='calibration images (default 32)')
    parser.add_argument('--out', required=True,
                        help='int8 file: .xml (openvino) or .onnx '
                        '(onnxruntime)')
    parser.add_argument('--backend', choices=('openvino', 'onnxruntime'),
                        default='openvino', help='quantiser and runtime')
    parser.add_argument('--split', choices=('test', 'val'), default='test',
                        help='which dataloader\'s dataset to calibrate on')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    suffix = '.xml' if args.backend == 'openvino' else '.onnx'
    if not args.out.endswith(suffix):
        fail(f'--out {args.out}: --backend {args.backend} writes a {suffix} '
             'file')
    if not args.model.endswith('.onnx'):
        fail(f'{args.model}: give the fp32 .onnx from export_onnx.py')
    if not osp.isfile(args.model):
        fail(f'model file not found: {args.model}')
    if args.calib < 1:
        fail(f'--calib must be at least 1, got {args.calib}')
    cfg = load_config(args.config, args.cfg_options)
    check_dataset_paths(cfg, [f'{args.split}_dataloader'])
    try:
        from mmswin.deploy.quantize import quantize
    except ImportError as error:
        fail(f'{error}; install the deploy extra: pip install -e ".[deploy]"')
    start = time.perf_counter()
    try:
        quantize(cfg, args.model, args.out, args.calib, args.backend,
                 args.split)
    except ImportError as error:
        fail(f'{error}; install the deploy extra: pip install -e ".[deploy]"')
    except ValueError as error:
        fail(str(error))
    print(f'int8 model ({args.backend}, calibrated on {args.calib} '
          f'{args.split} images) written to {args.out} in '
          f'{time.perf_counter() - start:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
