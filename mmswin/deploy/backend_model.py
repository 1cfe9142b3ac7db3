"""An exported model (ONNX Runtime or OpenVINO) in place of the PyTorch
model in mmengine's test loop.

:class:`BackendModel` takes what the config's ``test_dataloader`` gives
(``inputs``: ``(3, h, w)`` uint8 images after the test pipeline's resize;
``data_samples`` with their metainfo), does what the PyTorch model's data
preprocessor does outside the graph (pads the batch, :func:`pack_images`),
runs the graph, and returns the data samples as ``model.predict`` fills
them: detections with boxes rescaled to the original image and masks pasted
at its size; segmentation logits cropped to the image and resized to its
original size (mmseg's own ``postprocess_result``). So the config's
evaluator, visualisation hook and ``--out`` dumps take them unchanged.

:func:`evaluate_exported` runs the config's test loop and evaluator with
it; ``tools/test.py CONFIG MODEL_FILE --backend ...`` is its command line.
"""
import copy
import os.path as osp
import tempfile
import uuid
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.model import BaseModel

from .metadata import ModelFileInfo, read_model_file

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}
DETECTION_OUTPUTS = ('num_dets', 'boxes', 'scores', 'labels')


def task_of_config(cfg) -> str:
    """``'detection'`` (``default_scope='mmdet'``) or ``'segmentation'``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f"config's default_scope must be 'mmdet' or "
                         f"'mmseg', got {scope!r}")
    return TASKS[scope]


def _last(head_cfg):
    """The predicting head of a (possibly cascaded: a list) head config."""
    return head_cfg[-1] if isinstance(head_cfg, (list, tuple)) else head_cfg


def check_model_file(info: ModelFileInfo, model_cfg, task: str,
                     model_file: str) -> None:
    """Refuse a model file that was not exported from a config like this
    one: other outputs (another task, a features-only export, a mask head
    missing or extra), another class count, another task in its
    metadata."""
    name = osp.basename(model_file)
    hint = ('; evaluate it with the config it was exported from, or export '
            'this config (tools/deployment/export_onnx.py CONFIG ... --part '
            'full --dynamic)')
    if task == 'segmentation':
        expected = ['logits']
        num_classes = _last(model_cfg.decode_head).num_classes
    else:
        roi_head = model_cfg.get('roi_head') or {}
        with_mask = roi_head.get('mask_head') is not None
        expected = [*DETECTION_OUTPUTS, *(['masks'] if with_mask else [])]
        num_classes = _last(roi_head.get('bbox_head', {})).get('num_classes')
    outputs = list(info.output_names)
    # a detector graph of one image per call (exported before batching)
    # has no num_dets; its other outputs must match
    single = task == 'detection' and 'image_sizes' not in info.input_names
    wanted = [n for n in expected if not (single and n == 'num_dets')]
    if sorted(outputs) != sorted(wanted):
        raise ValueError(f'{name} outputs {outputs}, but a {task} model of '
                         f'this config outputs {wanted}{hint}')
    meta = info.metadata
    if meta.get('task', task) != task:
        raise ValueError(f'{name} is a {meta["task"]} model, the config a '
                         f'{task} config{hint}')
    found = meta.get('num_classes')
    if found is None and task == 'segmentation':
        found = info.output_dims['logits'][1]
    if found is not None and num_classes is not None and (
            found != num_classes):
        raise ValueError(f'{name} predicts {found} classes, the config '
                         f'{num_classes}{hint}')


class BackendModel(BaseModel):
    """An exported detector or segmentor as an mmengine model for the test
    loop (``test_step``) and for :class:`~mmswin.deploy.DeployedModel`.

    Args:
        cfg: The config the file was exported from (its ``model`` gives the
            preprocessing, the post-processing settings and the class count).
        model_file: ``.onnx`` or OpenVINO ``.xml`` (``part='full'`` export).
        backend: ``'onnxruntime'`` or ``'openvino'``.
        precision: ``'fp32'`` or ``'bf16'`` (OpenVINO).
        threads: Runtime threads, 0 for its default.

    Shape:
        - inputs: list of ``(3, h, w)`` images (uint8 or float), pixels as
          the test pipeline gives them; sides in ``[min_side, max_side]``.
        - returns: the data samples, with ``pred_instances`` (``bboxes``
          ``(N, 4)`` in original-image pixels, ``scores``, ``labels``,
          ``masks`` ``(N, H0, W0)`` bool) or ``seg_logits`` ``(C, H0, W0)``
          and ``pred_sem_seg`` ``(1, H0, W0)``, ``(H0, W0) = ori_shape``.
    """

    def __init__(self, cfg, model_file: str, backend: str = 'onnxruntime',
                 precision: str = 'fp32', threads: int = 0) -> None:
        from mmengine.registry import MODELS, init_default_scope

        from .export import MAX_SIDE, MIN_SIDE
        from .preprocess import ImagePreprocess
        from .runtime import make_runner
        super().__init__()
        self.task = task_of_config(cfg)
        model_cfg = cfg.model
        self.model_file = model_file
        # first: it checks the file's name, existence and the backend
        self.runner = make_runner(model_file, backend, precision, threads)
        info = read_model_file(model_file)
        check_model_file(info, model_cfg, self.task, model_file)
        # without metadata: the exporter's bounds for a dynamic export
        self.min_side = int(info.metadata.get('min_side', MIN_SIDE[self.task]))
        self.max_side = int(info.metadata.get('max_side', MAX_SIDE))
        self.backend, self.precision = backend, self.runner.precision
        init_default_scope(cfg.default_scope)
        data_preprocessor = MODELS.build(
            copy.deepcopy(model_cfg.data_preprocessor))
        self.preprocess = ImagePreprocess(data_preprocessor)
        # mmdet's preprocessor turns the samples' ground-truth box objects
        # into tensors (what its visualisation hook draws)
        self.boxtype2tensor = bool(getattr(data_preprocessor,
                                           'boxtype2tensor', False))
        if self.task == 'detection':
            rcnn = model_cfg.test_cfg.rcnn
            self.mask_threshold = float(rcnn.get('mask_thr_binary', 0.5))
            self.num_classes = _last(model_cfg.roi_head.bbox_head).num_classes
        else:  # what mmseg's postprocess_result reads from the segmentor
            head = _last(model_cfg.decode_head)
            threshold = head.get('threshold')
            self.segmentor_view = SimpleNamespace(
                align_corners=bool(head.get('align_corners', False)),
                decode_head=SimpleNamespace(
                    threshold=0.3 if threshold is None else threshold))

    def check_sizes(self, inputs: Sequence[torch.Tensor],
                    data_samples: Sequence) -> None:
        """Refuse images outside the export's side range (the graph would
        run and give a wrong result, or fail deep inside the runtime)."""
        for image, sample in zip(inputs, data_samples):
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(
                    f'images must have 3 colour channels ((3, h, w) after '
                    f'the pipeline), got shape {tuple(image.shape)}')
            height, width = image.shape[-2:]
            if min(height, width) < self.min_side or max(
                    height, width) > self.max_side:
                meta = getattr(sample, 'metainfo', {})
                what = meta.get('img_path') or 'an image'
                raise ValueError(
                    f'{what} is {height}x{width} after the test pipeline '
                    f'(original {meta.get("ori_shape")}); '
                    f'{osp.basename(self.model_file)} takes sides from '
                    f'{self.min_side} to {self.max_side}: use a larger '
                    'image or change the pipeline\'s Resize')

    def predict(self, inputs: Sequence[torch.Tensor],
                data_samples: List) -> List:
        """Run the graph on one batch; fill and return ``data_samples``."""
        self.check_sizes(inputs, data_samples)
        batch, sizes = pack_images(inputs, self.preprocess)
        if self.task == 'segmentation':
            logits = torch.from_numpy(self.runner(images=batch)['logits'])
            for sample, image_logits, (height, width) in zip(
                    data_samples, logits, sizes):
                postprocess_segmentation(
                    self.segmentor_view,
                    image_logits[None, :, :height, :width], sample)
            return data_samples
        if self.boxtype2tensor:
            from mmdet.models.utils import samplelist_boxtype2tensor
            samplelist_boxtype2tensor(data_samples)
        for sample, detections in zip(data_samples,
                                      self.run_detector(batch, sizes)):
            labels = detections['labels']
            if labels.size and labels.max() >= self.num_classes:
                # a file without metadata, from a config with more classes
                raise ValueError(
                    f'{osp.basename(self.model_file)} predicted class '
                    f'{labels.max()}, but the config has {self.num_classes} '
                    'classes: evaluate it with the config it was exported '
                    'from')
            sample.pred_instances = detection_instances(
                detections, sample.metainfo, self.mask_threshold)
        return data_samples

    def run_detector(self, batch: np.ndarray,
                     sizes: np.ndarray) -> List[Dict[str, np.ndarray]]:
        """The graph's detections per image, in input pixels."""
        from .batching import unpack_detections
        if 'image_sizes' in self.runner.input_names:
            return unpack_detections(self.runner(images=batch,
                                                 image_sizes=sizes))
        # a graph of one unpadded image per call
        return [self.runner(images=np.ascontiguousarray(
            image[None, :, :height, :width]))
            for image, (height, width) in zip(batch, sizes)]

    def test_step(self, data: dict) -> List:
        return self.predict(data['inputs'], data['data_samples'])

    val_step = test_step

    def forward(self, inputs, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError(f'an exported model only predicts, got mode='
                             f'{mode!r}')
        return self.predict(inputs, data_samples)


def pack_images(inputs, preprocess):
    """:func:`mmswin.deploy.batching.pack_images` (imported late: it needs
    only numpy and torch, but keeps this module's imports light)."""
    from .batching import pack_images as pack
    return pack(inputs, preprocess)


def detection_instances(detections: Dict[str, np.ndarray], metainfo: dict,
                        mask_threshold: float):
    """One image's graph detections as mmdet's ``pred_instances``
    (``model.predict(..., rescale=True)``): boxes divided by the resize's
    ``scale_factor``, masks pasted into ``ori_shape``."""
    from mmengine.structures import InstanceData

    from .postprocess import paste_masks, rescale_boxes
    boxes = rescale_boxes(torch.from_numpy(np.asarray(detections['boxes'])),
                          metainfo.get('scale_factor', (1.0, 1.0)))
    instances = InstanceData(
        bboxes=boxes,
        scores=torch.from_numpy(np.asarray(detections['scores'])),
        labels=torch.from_numpy(np.asarray(detections['labels'])).long())
    if 'masks' in detections:
        instances.masks = paste_masks(
            torch.from_numpy(np.asarray(detections['masks'])), boxes,
            tuple(metainfo['ori_shape'][:2]), mask_threshold)
    return instances


def postprocess_segmentation(segmentor_view, logits: torch.Tensor,
                             sample) -> None:
    """mmseg's ``BaseSegmentor.postprocess_result`` on one image's logits
    ``(1, C, h, w)`` (cropped to the image): resized to ``ori_shape``,
    ``seg_logits`` and ``pred_sem_seg`` set on ``sample``."""
    from mmseg.models.segmentors.base import BaseSegmentor
    BaseSegmentor.postprocess_result(segmentor_view, logits, [sample])


def build_backend_runner(cfg, model: BackendModel):
    """mmengine's ``Runner`` of the config's test loop, evaluator, default
    hooks (e.g. the visualisation hook) and visualiser, with ``model`` in
    place of the PyTorch model. ``custom_hooks`` are left out: they act on
    a PyTorch model's weights (EMA, freezing), which an exported model has
    not."""
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    if cfg.get('visualizer'):
        # mmengine keeps one visualiser per name for the whole process: a
        # name of its own, so that this runner neither draws with an
        # earlier runner's (another type, another folder) nor leaves its
        # own to a later one
        cfg.visualizer['name'] = f'exported_{uuid.uuid4().hex}'
    return Runner(
        model=model, work_dir=cfg.work_dir,
        test_dataloader=cfg.test_dataloader,
        test_cfg=cfg.get('test_cfg') or dict(type='TestLoop'),
        test_evaluator=cfg.test_evaluator,
        default_hooks=cfg.get('default_hooks'), launcher='none',
        env_cfg=cfg.get('env_cfg', dict(dist_cfg=dict(backend='gloo'))),
        log_processor=cfg.get('log_processor'),
        log_level=cfg.get('log_level', 'INFO'),
        visualizer=cfg.get('visualizer'),
        default_scope=cfg.get('default_scope', 'mmengine'),
        randomness=cfg.get('randomness', dict(seed=None)),
        experiment_name=cfg.get('experiment_name'), cfg=cfg)


def evaluate_exported(config, model_file: str, backend: str = 'onnxruntime',
                      precision: str = 'fp32',
                      cfg_options: Optional[dict] = None,
                      threads: int = 0) -> Dict[str, float]:
    """The config's test metrics of an exported model: its
    ``test_dataloader`` (batch size included) through the graph, scored by
    its ``test_evaluator``, as ``tools/test.py CONFIG CHECKPOINT`` scores
    the PyTorch model.

    Args:
        config: Config path or ``Config``.
        model_file: ``.onnx`` or OpenVINO ``.xml``.
        backend, precision, threads: As :func:`mmswin.deploy.make_runner`.
        cfg_options: Overrides, e.g. ``{'test_dataloader.batch_size': 4}``.

    Returns:
        The evaluator's metrics, e.g. ``{'coco/bbox_mAP': 0.61, ...}`` or
        ``{'mIoU': 72.3, ...}``.
    """
    from mmengine.config import Config

    import mmswin  # noqa: F401  (mmswin's registry scope)
    cfg = (copy.deepcopy(config) if isinstance(config, Config) else
           Config.fromfile(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    model = BackendModel(cfg, model_file, backend, precision, threads)
    with tempfile.TemporaryDirectory() as work_dir:
        if not cfg.get('work_dir'):
            cfg.work_dir = work_dir
        metrics = build_backend_runner(cfg, model).test()
    return {key: float(value) if isinstance(value, (int, float, np.number))
            else value for key, value in metrics.items()}
