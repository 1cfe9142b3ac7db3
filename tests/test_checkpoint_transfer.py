"""Transfer on load (bias tables to another window, absolute position
embedding to another grid), shape and version errors, and the loading
report in mmengine's log."""
import re

import pytest
import torch
import torch.nn.functional as F
from layout_factories import make_model, official_layout, timm_layout
from mmengine.logging import MMLogger

from mmswin.checkpoint import (
    CheckpointError,
    ShapeMismatchError,
    load_pretrained,
)


def _bicubic_table(table: torch.Tensor, window: int) -> torch.Tensor:
    """The official fine-tuning code's resize, written out here."""
    rows, heads = table.shape
    side = int(rows**0.5)
    grid = table.permute(1, 0).view(1, heads, side, side)
    new = 2 * window - 1
    grid = F.interpolate(grid, size=(new, new), mode='bicubic')
    return grid.view(heads, new * new).permute(1, 0)


def _save(tmp_path, state, name='ckpt.pth'):
    torch.save({'model': state}, tmp_path / name)
    return str(tmp_path / name)


@pytest.mark.parametrize('new_window', [12, 5])
def test_bias_tables_follow_the_window(tmp_path, new_window):
    """A window-7 checkpoint into a window-12 (and a window-5) model."""
    source = make_model(window_size=7)
    state = official_layout(source.state_dict(), window=7)
    model = make_model(window_size=new_window, seed=99)
    report = load_pretrained(model, _save(tmp_path, state))
    tables = [k for k in state if k.endswith('relative_position_bias_table')]
    assert sorted(report.resized) == sorted(tables) and len(tables) == 8
    for key in tables:
        expected = _bicubic_table(state[key], new_window)
        got = model.state_dict()[key]
        assert got.shape == ((2 * new_window - 1)**2, state[key].shape[1])
        assert (got - expected).abs().max() <= 1e-6, key
        assert report.conversion.log.transformed[key] == (
            f'resized {tuple(state[key].shape)} -> {tuple(got.shape)} '
            '(bicubic)')
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 100, 120))
    assert all(torch.isfinite(o).all() for o in outs)
    assert [o.shape[1] for o in outs] == [32, 64, 128, 256]


def test_absolute_pos_embed_follows_the_grid(tmp_path):
    """(1, 16*16, C) tokens of a 64-pixel pretraining into a model whose
    grid is 16x24 (pretrain_img_size=(64, 96))."""
    source = make_model(use_abs_pos_embed=True, pretrain_img_size=64)
    state = official_layout(source.state_dict())
    assert state['absolute_pos_embed'].shape == (1, 256, 32)
    model = make_model(use_abs_pos_embed=True, pretrain_img_size=(64, 96),
                       seed=99)
    report = load_pretrained(model, _save(tmp_path, state))
    assert report.resized == ['absolute_pos_embed']
    grid = state['absolute_pos_embed'].transpose(1, 2).reshape(1, 32, 16, 16)
    expected = F.interpolate(grid, size=(16, 24), mode='bicubic',
                             align_corners=False)
    got = model.absolute_pos_embed.detach()
    assert got.shape == (1, 32, 16, 24)
    assert (got - expected).abs().max() <= 1e-6


def test_same_grid_tokens_are_only_reshaped(tmp_path):
    source = make_model(use_abs_pos_embed=True, pretrain_img_size=64)
    model = make_model(use_abs_pos_embed=True, pretrain_img_size=64, seed=9)
    load_pretrained(model, _save(tmp_path, official_layout(
        source.state_dict())))
    assert torch.equal(model.absolute_pos_embed, source.absolute_pos_embed)


def test_untransferable_shape_names_key_and_shapes(tmp_path):
    source = make_model()
    model = make_model()
    with torch.no_grad():
        model.patch_embed.proj = torch.nn.Conv2d(3, 48, 4, 4)
    path = _save(tmp_path, official_layout(source.state_dict()))
    with pytest.raises(ShapeMismatchError) as err:
        load_pretrained(model, path)
    assert re.search(
        r"cannot load 'patch_embed\.proj\.weight': checkpoint shape "
        r'\(32, 3, 4, 4\) vs model shape \(48, 3, 4, 4\)', str(err.value))
    assert path in str(err.value)


def test_other_head_count_is_an_error(tmp_path):
    from mmswin.models import SwinTransformer
    source = make_model()
    model = SwinTransformer(arch=dict(embed_dims=32, depths=(2, 2, 2, 2),
                                      num_heads=(2, 2, 4, 8)),
                            window_size=4)
    with pytest.raises(ShapeMismatchError, match=re.escape(
            "'layers.0.blocks.0.attn.relative_position_bias_table': "
            'checkpoint shape (49, 1) vs model shape (49, 2) (another '
            'number of heads)')):
        load_pretrained(model, _save(tmp_path, official_layout(
            source.state_dict())))


@pytest.mark.parametrize('ckpt_version,model_version', [(1, 2), (2, 1)])
def test_v1_v2_mismatch_is_explained(tmp_path, ckpt_version, model_version):
    path = _save(tmp_path, official_layout(
        make_model(ckpt_version).state_dict()))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(make_model(model_version), path)
    wanted = 'SwinTransformerV2' if ckpt_version == 2 else 'SwinTransformer'
    assert (f'holds a Swin V{ckpt_version} backbone (official layout) but '
            f'the model is V{model_version}; build mmswin.{wanted}') in \
        str(err.value)


def test_no_swin_weights_and_bad_prefix(tmp_path):
    path = _save(tmp_path, {'conv1.weight': torch.zeros(8, 3, 3, 3)})
    with pytest.raises(CheckpointError, match='no Swin backbone found'):
        load_pretrained(make_model(), path)
    path = _save(tmp_path, official_layout(make_model().state_dict()),
                 'ok.pth')
    with pytest.raises(CheckpointError,
                       match="no key of .* starts with prefix 'backbone.'"):
        load_pretrained(make_model(), path, prefix='backbone.')


def test_report_goes_to_the_mmengine_log(tmp_path):
    log_file = tmp_path / 'run.log'
    MMLogger.get_instance('test_checkpoint_report', log_file=str(log_file))
    source = make_model()
    path = _save(tmp_path, timm_layout(source.state_dict()))
    load_pretrained(make_model(seed=9), path)
    for handler in MMLogger.get_current_instance().handlers:
        handler.flush()
    text = log_file.read_text()
    assert f'mmswin: loaded {path} into SwinTransformer' in text
    assert "layout: timm (Swin V1), backbone prefix ''" in text
    assert ('layers.1.downsample.reduction.weight -> '
            'layers.0.downsample.reduction.weight (x3)') in text
    assert 'head.fc.weight: classification head' in text
    assert 'missing keys (8):' in text and '    norm0.weight' in text
    assert 'unexpected keys' not in text
