"""The inference API (issue 20, item 4): ``mmswin.deploy.DeployedModel``
and ``demo/image_demo.py CONFIG MODEL.onnx IMAGE --backend ...`` give, on
photographs of several sizes, what ``mmdet.apis.inference_detector`` and
``mmseg.apis.inference_model`` give with the checkpoint; mmdet's and
mmseg's visualisers draw the results unchanged; bad input gets a one-line
error.

The photograph is matplotlib's sample ``grace_hopper.jpg`` (a dependency of
mmengine, so present offline), resized to sizes and aspect ratios that the
toy test pipelines resize differently (the models are the exported toys of
tests/deploy_fixtures.py).
"""

import mmcv
import numpy as np
import pytest
import torch
from helpers import load_tool

pytest.importorskip('onnxruntime')

from mmswin.deploy import DeployedModel  # noqa: E402

BOX_TOLERANCE = 1e-3  # pixels (issue 20)
# Random weights put mask probabilities near 0.5 (sigmoid of small logits)
# and class logits near each other, so the runtimes' ~1e-6 differences flip
# a few mask pixels and argmax labels.
MASK_FLIPS = 1e-5  # measured: at most 1.3e-6 of the pixels
# (height, width): landscape, portrait, the original, a wide one, and the
# original's size again (two images of one size share a graph call)
SIZES = [(480, 640), (300, 250), (600, 512), (200, 356), (600, 512)]


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """Paths of the photograph at each of SIZES (JPEG, BGR as mmcv reads)."""
    from matplotlib import cbook
    photo = mmcv.imread(cbook.get_sample_data('grace_hopper.jpg',
                                              asfileobj=False))
    folder = tmp_path_factory.mktemp('photos')
    paths = []
    for index, (height, width) in enumerate(SIZES):
        image = mmcv.imresize(photo, (width, height))
        if index == len(SIZES) - 1:
            image = image[:, ::-1].copy()  # same size, other content
        paths.append(str(folder / f'photo_{index}.png'))
        mmcv.imwrite(image, paths[-1])
    return paths


def test_detections_are_inference_detectors(exported_toy_detector, photos):
    """Same labels in the same order, boxes within 1e-3 px, scores within
    1e-5, masks equal but for threshold flips, for paths and for arrays,
    batched."""
    from mmdet.apis import inference_detector, init_detector
    toy = exported_toy_detector
    reference = init_detector(toy.config, toy.checkpoint, device='cpu')
    expected = inference_detector(reference, photos)
    model = DeployedModel(toy.config, toy.onnx, batch_size=4)
    from_paths = model(photos)
    from_arrays = model([mmcv.imread(p) for p in photos])
    for results in (from_paths, from_arrays):
        assert len(results) == len(photos)
        for ref, got, size in zip(expected, results, SIZES):
            ref, got = ref.pred_instances, got.pred_instances
            assert len(ref) > 0
            assert got.labels.tolist() == ref.labels.tolist()
            box_diff = (got.bboxes - ref.bboxes).abs().max().item()
            assert box_diff <= BOX_TOLERANCE, (size, box_diff)
            assert (got.scores - ref.scores).abs().max().item() <= 1e-5
            assert got.masks.shape == ref.masks.shape == (len(ref), *size)
            flipped = (got.masks != ref.masks).float().mean().item()
            print(f'{size}: box diff {box_diff:.2e}, mask pixels flipped '
                  f'{flipped:.2e}')
            assert flipped <= MASK_FLIPS, (size, flipped)


def test_mixed_sizes_in_one_call_are_mmdets_batch(exported_toy_detector,
                                                   photos):
    """Images of four sizes in one graph call (as the test loop batches
    them) give what mmdet's ``test_step`` gives on that batch, which its
    preprocessor pads as ``pack_images`` does."""
    toy = exported_toy_detector
    model = DeployedModel(toy.config, toy.onnx)
    items = [model.prepare(path, i) for i, path in enumerate(photos[:4])]
    inputs = [item['inputs'] for item in items]
    assert len({tuple(i.shape) for i in inputs}) == 4
    with torch.no_grad():
        expected = toy.model.test_step(dict(inputs=inputs, data_samples=[
            item['data_samples'].clone() for item in items]))
    got = model.model.predict(inputs, [item['data_samples'].clone()
                                       for item in items])
    for ref, out in zip(expected, got):
        ref, out = ref.pred_instances, out.pred_instances
        assert len(ref) > 0 and out.labels.tolist() == ref.labels.tolist()
        assert (out.bboxes - ref.bboxes).abs().max().item() <= BOX_TOLERANCE


def test_segmentation_is_inference_models(exported_toy_segmentor, photos):
    from mmseg.apis import inference_model, init_model
    toy = exported_toy_segmentor
    reference = init_model(toy.config, toy.checkpoint, device='cpu')
    model = DeployedModel(toy.config, toy.onnx, batch_size=2)
    results = model(photos)
    for path, got, size in zip(photos, results, SIZES):
        ref = inference_model(reference, path)
        assert got.pred_sem_seg.shape == ref.pred_sem_seg.shape == size
        logits = ref.seg_logits.data
        diff = (got.seg_logits.data - logits).abs().max().item()
        assert diff <= 1e-5 * max(1.0, logits.abs().max().item()), diff
        flipped = (got.pred_sem_seg.data != ref.pred_sem_seg.data
                   ).float().mean().item()
        print(f'{size}: logit diff {diff:.2e}, labels flipped {flipped:.2e}')
        assert flipped <= MASK_FLIPS, (size, flipped)


def test_visualisers_draw_results_unchanged(exported_toy_detector,
                                            exported_toy_segmentor, photos,
                                            tmp_path):
    """mmdet's and mmseg's visualisers draw a DeployedModel result as they
    draw the checkpoint's: the same picture."""
    from mmdet.apis import inference_detector, init_detector
    from mmengine.registry import VISUALIZERS
    toy = exported_toy_detector
    model = DeployedModel(toy.config, toy.onnx)
    reference = init_detector(toy.config, toy.checkpoint, device='cpu')
    visualizer = VISUALIZERS.build(dict(model.cfg.visualizer,
                                        name='deploy_api_test'))
    visualizer.dataset_meta = model.dataset_meta
    image = mmcv.imread(photos[0], channel_order='rgb')
    drawings = []
    for result in (model(photos[0]), inference_detector(reference,
                                                        photos[0])):
        np.random.seed(0)  # mmdet jitters each mask's colour at random
        visualizer.add_datasample('x', image, data_sample=result,
                                  draw_gt=False, show=False,
                                  pred_score_thr=0.0)
        drawings.append(visualizer.get_image())
    # the same picture but for the few mask pixels the runtimes flip
    # (measured: 5.2e-5 of the pixels)
    differ = (drawings[0] != drawings[1]).any(-1).mean()
    print(f'pixels drawn differently: {differ:.2e}')
    assert differ <= 1e-4, differ
    assert not np.array_equal(drawings[0], image)  # something was drawn

    from mmseg.apis import show_result_pyplot
    seg = DeployedModel(exported_toy_segmentor.config,
                        exported_toy_segmentor.onnx)
    out_file = str(tmp_path / 'seg.png')
    show_result_pyplot(seg, photos[1], seg(photos[1]), show=False,
                       out_file=out_file)
    assert mmcv.imread(out_file).shape == (*SIZES[1], 3)


def test_image_demo_draws_an_exported_model(exported_toy_detector, photos,
                                            tmp_path):
    """demo/image_demo.py CONFIG MODEL.onnx IMAGE --backend onnxruntime:
    the DeployedModel's result, drawn."""
    toy = exported_toy_detector
    out_file = str(tmp_path / 'out.jpg')
    demo = load_tool('demo/image_demo.py')
    result = demo.main([toy.config, toy.onnx, photos[0], '--backend',
                        'onnxruntime', '--out-file', out_file])
    expected = DeployedModel(toy.config, toy.onnx)(photos[0])
    assert torch.equal(result.pred_instances.bboxes,
                       expected.pred_instances.bboxes)
    assert mmcv.imread(out_file).shape == (*SIZES[0], 3)


def test_bad_input_gets_a_clear_error(exported_toy_detector,
                                      exported_toy_segmentor, photos,
                                      tmp_path):
    det, seg = exported_toy_detector, exported_toy_segmentor
    model = DeployedModel(det.config, det.onnx)
    photo = mmcv.imread(photos[0])
    with pytest.raises(ValueError, match=r'shape \(480, 640, 4\).*H x W x 3'):
        model([np.dstack([photo, photo[..., :1]])])
    with pytest.raises(ValueError, match=r'shape \(480, 640\).*GRAY2BGR'):
        model([photo[..., 0]])
    with pytest.raises(ValueError, match='float32; pass uint8'):
        model([photo.astype(np.float32)])
    # 600 x 100 becomes 160 x 27 in the test pipeline, below 65 px
    with pytest.raises(ValueError, match=r'160x27 after the test pipeline'
                       r'.*sides from 65'):
        model([np.zeros((600, 100, 3), np.uint8)])
    with pytest.raises(FileNotFoundError, match='image 1 not found'):
        model([photos[0], str(tmp_path / 'missing.jpg')])
    with pytest.raises(FileNotFoundError, match='model file not found'):
        DeployedModel(det.config, str(tmp_path / 'missing.onnx'))
    with pytest.raises(ValueError, match=r"outputs \['logits'\], but a "
                       'detection model'):
        DeployedModel(det.config, seg.onnx)
    with pytest.raises(ValueError, match='predicts 3 classes, the config 5'):
        DeployedModel(det.config, det.onnx, cfg_options={
            'model.roi_head.bbox_head.num_classes': 5,
            'model.roi_head.mask_head.num_classes': 5})
    with pytest.raises(ValueError, match='predicts 4 classes, the config 7'):
        DeployedModel(seg.config, seg.onnx, cfg_options={
            'model.decode_head.num_classes': 7})
    # without the file's metadata, a label beyond the config's classes
    import onnx
    proto = onnx.load(det.onnx)
    del proto.metadata_props[:]
    bare = str(tmp_path / 'bare.onnx')
    onnx.save(proto, bare)
    fewer = DeployedModel(det.config, bare, cfg_options={
        'model.roi_head.bbox_head.num_classes': 1,
        'model.roi_head.mask_head.num_classes': 1})
    with pytest.raises(ValueError, match=r'predicted class [12], but the '
                       'config has 1 classes'):
        fewer(photos[0])
