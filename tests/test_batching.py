"""pack_images / unpack_detections (issue 20 item 2): images of mixed sizes
packed for the batched graphs pad exactly as mmdet's and mmseg's data
preprocessors pad, and the padded detector outputs unpack per image."""
import numpy as np
import pytest
import torch
from helpers import TOY_DET_CONFIG, TOY_SEG_CONFIG, load_config

from mmswin.deploy import ImagePreprocess, pack_images, unpack_detections

SIZES = [(97, 131), (70, 160), (128, 99)]


def data_preprocessor(config: str, **overrides):
    from mmengine.registry import MODELS, init_default_scope
    cfg = load_config(config[len('configs/'):-len('.py')])
    init_default_scope(cfg.default_scope)
    return MODELS.build(dict(cfg.model.data_preprocessor, **overrides))


def random_chw(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=gen,
                          dtype=torch.uint8) for h, w in SIZES]


@pytest.mark.parametrize('config,overrides', [
    (TOY_DET_CONFIG, {}),
    (TOY_DET_CONFIG, dict(bgr_to_rgb=False)),
    (TOY_SEG_CONFIG, dict(test_cfg=dict(size_divisor=32))),
])
def test_pack_pads_as_the_data_preprocessor(config, overrides):
    """After the graph's preprocessing the packed batch equals the library's
    own preprocessed batch (which pads normalised images with 0), padding
    region included, exactly."""
    pre = data_preprocessor(config, **overrides)
    images = random_chw()
    batch, sizes = pack_images(images, pre)
    assert batch.dtype == np.float32 and sizes.dtype == np.int64
    assert batch.shape == (3, 3, 128, 160)
    assert sizes.tolist() == [list(s) for s in SIZES]
    graph = ImagePreprocess(pre)
    ours = graph(torch.from_numpy(batch))
    for (h, w), out in zip(SIZES, ours):
        assert torch.equal(out[:, h:], torch.zeros_like(out[:, h:]))
        assert torch.equal(out[:, :, w:], torch.zeros_like(out[:, :, w:]))
    if config == TOY_SEG_CONFIG:
        # mmseg refuses mixed sizes at test time; it pads them (training,
        # or same-size test batches with a test_cfg) with stack_batch
        from mmseg.utils import stack_batch
        normalised = [(i[[2, 1, 0]].float() - pre.mean) / pre.std
                      for i in images]
        data = stack_batch(normalised, size_divisor=32,
                           pad_val=pre.pad_val)[0]
    else:
        data = pre(dict(inputs=list(images)), training=False)['inputs']
    assert data.shape == ours.shape == (3, 3, 128, 160)
    assert torch.equal(ours, data)


def test_pack_layouts_and_errors():
    pre = data_preprocessor(TOY_DET_CONFIG)
    images = random_chw(1)
    chw, sizes = pack_images(images, pre)
    hwc, sizes2 = pack_images([i.permute(1, 2, 0).numpy() for i in images],
                              pre)
    assert np.array_equal(chw, hwc) and np.array_equal(sizes, sizes2)
    # the fill is the mean in input (BGR) order: mmdet's mean is RGB
    mean_rgb = pre.mean.flatten().numpy()
    assert np.allclose(chw[0, :, -1, -1], mean_rgb[::-1])
    with pytest.raises(ValueError, match=r'image 1 must be .*got shape'):
        pack_images([images[0], np.zeros((5, 40, 4))], pre)
    with pytest.raises(ValueError, match='at least one image'):
        pack_images([], pre)


def test_unpack_cuts_at_num_dets():
    rng = np.random.default_rng(0)
    outputs = dict(num_dets=np.array([2, 0, 5]),
                   boxes=rng.random((3, 5, 4), np.float32),
                   scores=rng.random((3, 5), np.float32),
                   labels=rng.integers(0, 3, (3, 5)),
                   masks=rng.random((3, 5, 28, 28), np.float32))
    images = unpack_detections(outputs)
    assert [len(i['boxes']) for i in images] == [2, 0, 5]
    for index, image in enumerate(images):
        assert set(image) == {'boxes', 'scores', 'labels', 'masks'}
        n = outputs['num_dets'][index]
        for key, value in image.items():
            assert np.array_equal(value, outputs[key][index, :n])
    del outputs['masks']
    assert set(unpack_detections(outputs)[0]) == {'boxes', 'scores',
                                                  'labels'}
    with pytest.raises(KeyError, match='num_dets'):
        unpack_detections(dict(boxes=outputs['boxes']))
