"""Run a trained model on one image and draw its predictions.

    python demo/image_demo.py CONFIG CHECKPOINT IMAGE --out-file OUT.png
        [--device cpu] [--score-thr 0.3] [--cfg-options KEY=VALUE ...]

mmdet configs: boxes, class names and scores, and instance masks drawn
over the image. mmseg configs: the label map blended over the image. A
checkpoint that does not fit the model is refused with one line
(``--allow-partial`` draws anyway).

    python demo/image_demo.py CONFIG MODEL.onnx IMAGE --backend onnxruntime
        --out-file OUT.png [--precision fp32|bf16]

draws an exported model's predictions (``.onnx``, or OpenVINO ``.xml``
with ``--backend openvino``) the same way (mmswin.deploy.DeployedModel).
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import mmcv

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(
    __file__))), 'tools'))
from checkpoint_utils import add_allow_partial, init_checked  # noqa: E402
from tool_utils import (  # noqa: E402
    DictAction,
    add_backend_args,
    check_backend_args,
    check_checkpoint,
    fail,
    load_config,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw predictions on an '
                                     'image')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (with '
                        '--backend: an exported .onnx or OpenVINO .xml)')
    add_backend_args(parser, 'run')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-file', required=True,
                        help='where to write the drawing (.png, .jpg)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detections below this score are not drawn')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation: label map opacity')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    add_allow_partial(parser, 'draw')
    return parser.parse_args(argv)


def exported_prediction(cfg, args: argparse.Namespace):
    """The exported model (a DeployedModel: ``cfg`` and ``dataset_meta``
    as the visualisers read them from a model) and its prediction."""
    try:
        from mmswin.deploy import DeployedModel
        model = DeployedModel(cfg, args.checkpoint, args.backend,
                              args.precision)
        return model, model(args.image)
    except (ImportError, OSError, ValueError) as error:
        fail(str(error))


def main(argv: Optional[List[str]] = None):
    """Draw; returns the model's prediction (a data sample)."""
    args = parse_args(argv)
    check_backend_args(args)
    cfg = load_config(args.config, args.cfg_options)
    if not args.backend:  # a model file: checked by its runtime
        check_checkpoint(args.checkpoint)
    if not osp.isfile(args.image):
        fail(f'image not found: {args.image}')
    scope = cfg.get('default_scope', 'mmdet')
    if scope == 'mmseg':
        from mmseg.apis import inference_model, init_model, show_result_pyplot
        if args.backend:
            model, result = exported_prediction(cfg, args)
        else:
            model = init_checked(init_model, cfg, args.checkpoint,
                                 args.device, args.allow_partial)
            result = inference_model(model, args.image)
        show_result_pyplot(model, args.image, result, opacity=args.opacity,
                           show=False, out_file=args.out_file)
    elif scope == 'mmdet':
        from mmdet.apis import inference_detector, init_detector
        from mmdet.registry import VISUALIZERS
        if args.backend:
            model, result = exported_prediction(cfg, args)
        else:
            model = init_checked(init_detector, cfg, args.checkpoint,
                                 args.device, args.allow_partial)
            result = inference_detector(model, args.image)
        visualizer = VISUALIZERS.build(model.cfg.visualizer)
        visualizer.dataset_meta = model.dataset_meta
        image = mmcv.imread(args.image, channel_order='rgb')
        visualizer.add_datasample(
            'result', image, data_sample=result, draw_gt=False, show=False,
            pred_score_thr=args.score_thr, out_file=args.out_file)
    else:
        fail(f'image_demo supports mmdet and mmseg configs, got '
             f'default_scope={scope!r}')
    print(f'predictions drawn into {args.out_file}')
    return result


if __name__ == '__main__':
    main()
