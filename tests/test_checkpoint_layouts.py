"""Checkpoints in the documented key layouts of implementations that do not
import here (official Microsoft V1/V2, its det/seg repos, SimMIM, MoBY,
timm, torchvision, mmpretrain V1/V2) load into mmswin and round-trip
exactly: every tensor equals the source model's, and so do the outputs.

The builders below write each layout from an mmswin state dict following
the layouts' published code, independently of mmswin.checkpoint (the
patch-merging channel order of OpenMMLab is derived from ``nn.Unfold``
itself). Other checkpoint tests import the builders.
"""
import re
from typing import Dict

import pytest
import torch
import torch.nn as nn
from helpers import randomize_

from mmswin.checkpoint import load_pretrained
from mmswin.models import SwinTransformer, SwinTransformerV2

StateDict = Dict[str, torch.Tensor]
ARCH = dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8))
WINDOW = 4


def make_model(version: int = 1, seed: int = 1234, **kwargs) -> nn.Module:
    """A small mmswin backbone (C=32) with random weights, in eval mode."""
    cls = SwinTransformer if version == 1 else SwinTransformerV2
    kwargs.setdefault('window_size', WINDOW)
    model = cls(arch=ARCH, drop_path_rate=0., **kwargs)
    return randomize_(model, seed=seed).eval()


def _blocks(state: StateDict):
    return sorted({m[0] for m in map(
        re.compile(r'^layers\.\d+\.blocks\.\d+\.').match, state) if m})


def official_layout(state: StateDict, window: int = WINDOW,
                    num_classes: int = 10) -> StateDict:
    """Microsoft classification checkpoint: persistent derived buffers,
    final norm + head, no per-output norms, position tokens (1, L, C)."""
    gen = torch.Generator().manual_seed(5)
    out = {k: v for k, v in state.items() if not re.match(r'norm\d', k)}
    n = window * window
    for block in _blocks(state):
        out[block + 'attn.relative_position_index'] = torch.randint(
            0, (2 * window - 1)**2, (n, n), generator=gen)
        if int(block.split('.')[3]) % 2:
            out[block + 'attn_mask'] = torch.zeros(4, n, n)
        if block + 'attn.logit_scale' in state:
            out[block + 'attn.relative_coords_table'] = torch.rand(
                1, 2 * window - 1, 2 * window - 1, 2, generator=gen)
    width = state['layers.3.blocks.0.norm1.weight'].numel()
    out['norm.weight'] = torch.rand(width, generator=gen)
    out['norm.bias'] = torch.rand(width, generator=gen)
    out['head.weight'] = torch.rand(num_classes, width, generator=gen)
    out['head.bias'] = torch.rand(num_classes, generator=gen)
    if 'absolute_pos_embed' in out:
        pos = out['absolute_pos_embed']
        out['absolute_pos_embed'] = pos.flatten(2).transpose(1, 2)
    return out


def timm_layout(state: StateDict) -> StateDict:
    """timm 1.x: official names, merging at the start of stage i+1,
    ``head.fc``, non-persistent derived buffers."""
    out = {}
    for key, value in official_layout(state).items():
        if key.endswith(('relative_position_index', 'attn_mask',
                         'relative_coords_table')):
            continue
        key = re.sub(r'^layers\.(\d+)\.downsample',
                     lambda m: f'layers.{int(m[1]) + 1}.downsample', key)
        out[key.replace('head.', 'head.fc.')] = value
    return out


def torchvision_layout(state: StateDict) -> StateDict:
    """torchvision: one ``features`` sequence, ``mlp.0``/``mlp.3``; V2 has
    a full ``qkv.bias`` whose k third is ignored."""
    gen = torch.Generator().manual_seed(6)
    out = {}
    for key, value in official_layout(state).items():
        if key.endswith(('attn_mask', 'relative_position_index')):
            continue
        key = re.sub(r'^patch_embed\.proj\.', 'features.0.0.', key)
        key = re.sub(r'^patch_embed\.norm\.', 'features.0.2.', key)
        key = re.sub(r'^layers\.(\d+)\.blocks\.',
                     lambda m: f'features.{2 * int(m[1]) + 1}.', key)
        key = re.sub(r'^layers\.(\d+)\.downsample\.',
                     lambda m: f'features.{2 * int(m[1]) + 2}.', key)
        key = key.replace('.mlp.fc1.', '.mlp.0.').replace('.mlp.fc2.',
                                                            '.mlp.3.')
        if key.endswith('attn.q_bias'):
            v_bias = state[_mmswin_key(key).replace('q_bias', 'v_bias')]
            k_noise = torch.randn(value.shape, generator=gen)
            key, value = key.replace('q_bias', 'qkv.bias'), torch.cat(
                [value, k_noise, v_bias])
        elif key.endswith('attn.v_bias'):
            continue
        out[key] = value
    return out


def _mmswin_key(torchvision_key: str) -> str:
    stage, rest = re.match(r'^features\.(\d+)\.(.*)$',
                           torchvision_key).groups()
    return f'layers.{(int(stage) - 1) // 2}.blocks.{rest}'


def unfold_permutation(channels: int) -> torch.Tensor:
    """Indices p with ``W_unfold = W_official[..., p]``, from nn.Unfold."""
    offsets = [(0, 0), (1, 0), (0, 1), (1, 1)]  # official x0, x1, x2, x3
    ids = torch.zeros(channels, 2, 2)
    for k, (row, col) in enumerate(offsets):
        ids[:, row, col] = k * channels + torch.arange(channels)
    unfolded = nn.Unfold(kernel_size=2, stride=2)(ids[None])
    return unfolded.flatten().long()


def openmmlab_layout(state: StateDict, merge_at_start: bool = False
                     ) -> StateDict:
    """mmdet/mmseg/mmpretrain: ``stages``, ``w_msa``, ``ffn``, Unfold
    channel order; ``merge_at_start``: mmpretrain V2 (merging at the start
    of stage i+1, norm over 2C)."""
    out = {}
    for key, value in state.items():
        match = re.match(r'^layers\.(\d+)\.downsample\.(\w+)\.(\w+)$', key)
        if match:
            stage, part, kind = int(match[1]), match[2], match[3]
            perm = unfold_permutation(value.shape[-1] // 4)
            if part == 'reduction' or value.numel() == 4 * (
                    state[f'layers.{stage}.downsample.reduction.weight']
                    .shape[-1] // 4):
                value = value[..., perm]
            stage = stage + 1 if merge_at_start else stage
            out[f'stages.{stage}.downsample.{part}.{kind}'] = value
            continue
        key = key.replace('patch_embed.proj.', 'patch_embed.projection.')
        key = re.sub(r'^layers\.', 'stages.', key)
        key = key.replace('.attn.', '.attn.w_msa.')
        key = key.replace('.mlp.fc1.', '.ffn.layers.0.0.').replace(
            '.mlp.fc2.', '.ffn.layers.1.')
        if key == 'absolute_pos_embed':
            value = value.flatten(2).transpose(1, 2)
        out[key] = value
    for block in _blocks(state):
        n = WINDOW * WINDOW
        out['stages' + block[6:] + 'attn.w_msa.relative_position_index'] = \
            torch.zeros(n, n, dtype=torch.long)
    return out


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
