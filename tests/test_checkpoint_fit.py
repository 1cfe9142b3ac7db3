"""mmswin.checkpoint's fit check as a Python API, on small models (the tools
and the bad-input matrix: tests/test_checkpoint_fit_matrix.py)."""
import pytest
import torch
import torch.nn as nn

from mmswin import SwinTransformer
from mmswin.checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    check_fit,
    load_checkpoint,
    require_fit,
)


def swin(embed_dims: int = 32) -> SwinTransformer:
    return SwinTransformer(embed_dims=embed_dims, depths=(1, 1),
                           num_heads=(1, 2), window_size=4,
                           out_indices=(0, 1))


def test_unused_keys_alone_fit():
    """An EMA copy next to the weights: reported, not refused."""
    model = swin()
    state = model.state_dict()
    state.update({'ema_' + k: v for k, v in model.state_dict().items()})
    report = check_fit(model, state, 'ema.pth')
    assert report.fits
    assert report.unused() == 'ema_patch_embed, ema_layers, ema_norm0, ' \
        f'ema_norm1 not used ({len(model.state_dict())} tensors)'
    require_fit(report)  # no error


def test_load_checkpoint_refuses_with_the_named_error(tmp_path):
    path = str(tmp_path / 'c48.pth')
    torch.save({'state_dict': swin(48).state_dict()}, path)
    model = swin(32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(model, path)
    assert isinstance(error.value, CheckpointError)
    assert isinstance(error.value, RuntimeError)
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(f'checkpoint {path} holds a backbone only (')
    assert 'the config builds a Swin backbone' in message
    assert 'tensors of another shape (e.g. patch_embed.proj.weight: ' \
        'checkpoint (48, 3, 4, 4), config (32, 3, 4, 4))' in message
    assert message.endswith('(pass allow_partial=True to load anyway)')
    assert all(torch.equal(v, before[k])
               for k, v in model.state_dict().items())


def test_allow_partial_loads_what_fits(tmp_path):
    """A checkpoint of a backbone with one block fewer in its last stage:
    everything it has is loaded, the extra block keeps its values."""
    source = swin(32)
    path = str(tmp_path / 'c.pth')
    torch.save({'state_dict': source.state_dict()}, path)
    model = SwinTransformer(embed_dims=32, depths=(1, 2), num_heads=(1, 2),
                            window_size=4, out_indices=(0, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    load_checkpoint(model, path, allow_partial=True)
    got, expected = model.state_dict(), source.state_dict()
    extra = [k for k in got if k not in expected]
    assert extra and all(k.startswith('layers.1.blocks.1.') for k in extra)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert all(torch.equal(got[k], before[k]) for k in extra)


def test_batchnorm_counter_is_not_required():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = {k: v for k, v in model.state_dict().items()
             if not k.endswith('num_batches_tracked')}
    assert check_fit(model, state).fits
    del state['1.running_var']
    report = check_fit(model, state)
    assert not report.fits and report.missing == ['1.running_var']
