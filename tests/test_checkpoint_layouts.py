"""Checkpoints in the documented key layouts of implementations that do not
import here (official Microsoft V1/V2, its det/seg repos, SimMIM, MoBY,
timm, torchvision, mmpretrain V1/V2) load into mmswin and round-trip
exactly: every tensor equals the source model's, and so do the outputs.

The layouts are written by tests/layout_factories.py, independently of
mmswin.checkpoint.
"""
import re

import pytest
import torch
import torch.nn as nn
from helpers import randomize_
from layout_factories import (
    make_model,
    official_layout,
    openmmlab_layout,
    timm_layout,
    torchvision_layout,
    unfold_permutation,
)

from mmswin.checkpoint import load_pretrained


def _assert_loaded(model: nn.Module, source: nn.Module,
                   skip: str = r'^$') -> None:
    theirs = source.state_dict()
    for key, value in model.state_dict().items():
        if not re.match(skip, key):
            assert torch.equal(value, theirs[key]), key


def _save(tmp_path, state, name='ckpt.pth', wrap='model'):
    path = tmp_path / name
    torch.save({wrap: state} if wrap else state, path)
    return str(path)


NORMS = r'^norm\d\.'


@pytest.mark.parametrize('version', [1, 2])
def test_official_classification(tmp_path, version):
    source = make_model(version)
    path = _save(tmp_path, official_layout(source.state_dict()))
    model = make_model(version, seed=99)
    report = load_pretrained(model, path)
    assert report.conversion.layout == 'official'
    assert not report.unexpected
    # the final classification norm is dropped, not mapped to norm3
    assert sorted(report.missing) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    assert report.conversion.log.dropped['norm.weight'].startswith(
        'classification norm')
    _assert_loaded(model, source, skip=NORMS)


def test_official_detection_backbone_prefix(tmp_path):
    source = make_model()
    state = {'backbone.' + k: v
             for k, v in official_layout(source.state_dict()).items()
             if not k.startswith(('head.', 'norm.'))}
    state.update({'backbone.' + k: v for k, v in source.state_dict().items()
                  if re.match(NORMS, k)})
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(8, 32, 1, 1)
    path = _save(tmp_path, state, wrap='state_dict')
    model = make_model(seed=99)
    report = load_pretrained(model, path)
    assert (report.conversion.layout, report.conversion.prefix) == (
        'official', 'backbone.')
    assert report.conversion.ignored == ['neck.lateral_convs.0.conv.weight']
    assert not report.missing and not report.unexpected
    _assert_loaded(model, source)


def test_simmim_and_moby_encoders(tmp_path):
    online, momentum = make_model(seed=1), make_model(seed=2)
    state = {'encoder.' + k: v
             for k, v in official_layout(online.state_dict()).items()}
    state['encoder.mask_token'] = torch.zeros(1, 1, 32)
    state['decoder.0.weight'] = torch.zeros(48, 256, 1, 1)
    state.update({'encoder_k.' + k: v for k, v in official_layout(
        momentum.state_dict()).items()})
    path = _save(tmp_path, state)
    model = make_model(seed=99)
    report = load_pretrained(model, path)
    assert report.conversion.prefix == 'encoder.'
    assert report.conversion.other_prefixes == ['encoder_k.']
    assert report.conversion.log.dropped['mask_token'] == \
        'pretraining mask token'
    _assert_loaded(model, online, skip=NORMS)
    load_pretrained(model, path, prefix='encoder_k.')
    _assert_loaded(model, momentum, skip=NORMS)


@pytest.mark.parametrize('version', [1, 2])
def test_timm(tmp_path, version):
    source = make_model(version)
    path = _save(tmp_path, timm_layout(source.state_dict()), wrap=None)
    model = make_model(version, seed=99)
    report = load_pretrained(model, path)
    assert report.conversion.layout == 'timm'
    assert report.conversion.log.renamed['layers.0.downsample.norm.weight'] \
        == 'layers.1.downsample.norm.weight'
    assert not report.unexpected
    _assert_loaded(model, source, skip=NORMS)


@pytest.mark.parametrize('version', [1, 2])
def test_torchvision(tmp_path, version):
    source = make_model(version)
    path = _save(tmp_path, torchvision_layout(source.state_dict()),
                 wrap=None)
    model = make_model(version, seed=99)
    report = load_pretrained(model, path)
    assert report.conversion.layout == 'torchvision'
    assert not report.unexpected
    _assert_loaded(model, source, skip=NORMS)


@pytest.mark.parametrize('version', [1, 2])
def test_mmpretrain(tmp_path, version):
    """mmpretrain V1 merges at the end of a stage, V2 at the start of the
    next (norm over 2C); both in the Unfold channel order."""
    source = make_model(version)
    state = openmmlab_layout(source.state_dict(),
                             merge_at_start=version == 2)
    state = {'backbone.' + k: v for k, v in state.items()}
    state['head.fc.weight'] = torch.zeros(10, 256)
    path = _save(tmp_path, state, wrap='state_dict')
    model = make_model(version, seed=99)
    report = load_pretrained(model, path)
    assert report.conversion.layout == 'openmmlab'
    assert not report.missing and not report.unexpected
    _assert_loaded(model, source)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        for got, want in zip(model(x), source(x)):
            assert torch.equal(got, want)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file
    source = make_model()
    path = str(tmp_path / 'model.safetensors')
    save_file(timm_layout(source.state_dict()), path)
    model = make_model(seed=99)
    assert load_pretrained(model, path).conversion.layout == 'timm'
    _assert_loaded(model, source, skip=NORMS)


def test_unfold_permutation_matches_openmmlab_merging():
    """The test's own Unfold order agrees with mmcv's PatchMerging."""
    from mmcv.cnn.bricks.transformer import PatchMerging

    from mmswin.models.layers.patch import PatchMerging as Official
    theirs = randomize_(PatchMerging(8, 16))
    ours = Official(8)
    perm = unfold_permutation(8)
    inverse = torch.argsort(perm)
    with torch.no_grad():
        ours.reduction.weight.copy_(theirs.reduction.weight[:, inverse])
        ours.norm.weight.copy_(theirs.norm.weight[inverse])
        ours.norm.bias.copy_(theirs.norm.bias[inverse])
    x = torch.randn(2, 6, 10, 8)
    got = ours(x).flatten(1, 2)
    want, _ = theirs(x.flatten(1, 2), (6, 10))
    assert (got - want).abs().max() <= 1e-5
