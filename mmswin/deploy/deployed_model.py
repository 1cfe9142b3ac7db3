"""An exported model to call on images: ``DeployedModel(config, model_file)
(images)`` returns one mmdet ``DetDataSample`` or mmseg ``SegDataSample``
per image, in the original image's pixels, as ``inference_detector`` /
``inference_model`` return them for a checkpoint."""
import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .backend_model import BackendModel

ImageInput = Union[str, np.ndarray]


def _innermost_dataset(dataset_cfg):
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


class DeployedModel:
    """An exported detector or segmentor, loaded once, called on images.

    Args:
        config: The config the model was exported from (path or
            ``Config``): its test pipeline (loading, resize) prepares the
            images, its ``model`` the preprocessing and post-processing.
        model_file: ``.onnx`` or OpenVINO ``.xml`` (a ``part='full'``
            export).
        backend: ``'onnxruntime'`` or ``'openvino'``.
        precision: ``'fp32'`` or ``'bf16'`` (OpenVINO).
        batch_size: Images per graph call. Images whose test-pipeline sizes
            are equal share a call, so each result equals the checkpoint's
            ``inference_detector``/``inference_model`` on that image alone
            (mixed sizes in one call would pad the smaller images).
        threads: Runtime threads, 0 for its default.
        cfg_options: Config overrides.

    Attributes:
        cfg: The config. dataset_meta: Class names (and palette) of the
            config's test dataset, for mmdet's/mmseg's visualisers.

    ``model(images)``: ``images`` is a list of image paths or ``H x W x 3``
    BGR uint8 arrays (``mmcv.imread``'s), of any sizes; returns one data
    sample per image: ``pred_instances`` (``bboxes`` ``(N, 4)``, ``scores``,
    ``labels``, ``masks`` ``(N, H, W)`` bool) or ``pred_sem_seg``
    ``(1, H, W)`` and ``seg_logits`` ``(C, H, W)``. One path or array gives
    one sample.
    """

    def __init__(self, config, model_file: str, backend: str = 'onnxruntime',
                 precision: str = 'fp32', batch_size: int = 1,
                 threads: int = 0, cfg_options: Optional[dict] = None) -> None:
        from mmengine.config import Config
        from mmengine.dataset import Compose
        from mmengine.registry import DATASETS, init_default_scope

        import mmswin  # noqa: F401  (mmswin's registry scope)
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        if isinstance(config, str) and not osp.isfile(config):
            raise FileNotFoundError(f'config file not found: {config}')
        cfg = (copy.deepcopy(config) if isinstance(config, Config) else
               Config.fromfile(config))
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        self.cfg = cfg
        self.batch_size = batch_size
        self.model = BackendModel(cfg, model_file, backend, precision,
                                  threads)
        scope = cfg.default_scope
        init_default_scope(scope)
        dataset = _innermost_dataset(cfg.test_dataloader.dataset)
        meta = dict(getattr(DATASETS.get(dataset.type), 'METAINFO', {}))
        meta.update(dataset.get('metainfo') or {})
        self.dataset_meta = meta
        # the test pipeline without annotations, from a file or an array
        # (mmseg's inference_model reads cfg.test_pipeline, mmdet's the
        # test dataset's)
        pipeline = (cfg.get('test_pipeline') if scope == 'mmseg' else
                    None) or dataset.pipeline
        steps = [dict(step) for step in pipeline
                 if 'LoadAnnotations' not in step['type']]
        if 'LoadImageFromFile' not in steps[0]['type']:
            raise ValueError('the test pipeline must start with '
                             f"LoadImageFromFile, got {steps[0]['type']!r}")
        from_array = [dict(steps[0], type=f'{scope}.LoadImageFromNDArray'),
                      *steps[1:]]
        self.pipelines = dict(path=Compose(steps), array=Compose(from_array))

    def prepare(self, image: ImageInput, index: int) -> Dict:
        """One image through the test pipeline: ``inputs`` ``(3, h, w)``
        and ``data_samples`` (metainfo: ``ori_shape``, ``scale_factor``...).
        """
        if isinstance(image, str):
            if not osp.isfile(image):
                raise FileNotFoundError(f'image {index} not found: {image}')
            return self.pipelines['path'](dict(img_path=image, img_id=index))
        if not isinstance(image, np.ndarray):
            raise TypeError(f'image {index}: expected a path or an H x W x 3 '
                            f'BGR uint8 array, got {type(image).__name__}')
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f'image {index} has shape {image.shape}; the model takes '
                'H x W x 3 BGR images: convert grey (cv2.COLOR_GRAY2BGR) or '
                'drop the alpha channel (image[..., :3]) first')
        if image.dtype != np.uint8:
            raise ValueError(f'image {index} is {image.dtype}; pass uint8 '
                             'pixels (0..255), as mmcv.imread gives them')
        return self.pipelines['array'](dict(img=image, img_id=index))

    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]]):
        single = isinstance(images, (str, np.ndarray))
        items = [self.prepare(image, i) for i, image in
                 enumerate([images] if single else images)]
        for item in items:  # every image is checked before any runs
            self.model.check_sizes([item['inputs']], [item['data_samples']])
        by_size: Dict[tuple, List[int]] = {}
        for index, item in enumerate(items):
            by_size.setdefault(tuple(item['inputs'].shape), []).append(index)
        results: List = [None] * len(items)
        for indices in by_size.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                samples = self.model.predict(
                    [items[i]['inputs'] for i in chunk],
                    [items[i]['data_samples'] for i in chunk])
                for index, sample in zip(chunk, samples):
                    results[index] = sample
        return results[0] if single else results
