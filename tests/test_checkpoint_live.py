"""Checkpoints written by live third-party models (mmdet 3.x, mmseg 1.x,
HF transformers Swin and SwinV2) load into mmswin and give the
third-party model's outputs.

Measured (CPU, fp32, random weights, 160x160 input): max abs diff vs mmdet
and mmseg 4.3e-6, vs HF Swin 3.3e-6 to 3.6e-6, vs HF Swinv2Backbone
3.7e-6. Asserted: 5e-5, about 10x the maximum.
"""
import pytest
import torch
import torch.nn.functional as F
from helpers import max_abs_diff, randomize_
from layout_factories import ARCH

from mmswin.checkpoint import load_pretrained
from mmswin.models import SwinTransformer, SwinTransformerV2

TOL = 5e-5
SIZE = 160  # every stage (40, 20, 10, 5) is larger than the window 4


def _ours(version=1, **kwargs):
    cls = SwinTransformer if version == 1 else SwinTransformerV2
    return cls(arch=ARCH, window_size=4, drop_path_rate=0., **kwargs).eval()


def _check(theirs_out, ours, x, tol=TOL):
    with torch.no_grad():
        diffs = max_abs_diff(theirs_out, ours(x))
    assert max(diffs) <= tol, diffs
    return diffs


@pytest.mark.parametrize('library', ['mmdet', 'mmseg'])
def test_openmmlab_detector_checkpoint(tmp_path, library):
    """A full mmdet/mmseg checkpoint (backbone under ``backbone.``, with
    the absolute position embedding as (1, L, C))."""
    if library == 'mmdet':
        from mmdet.models.backbones import SwinTransformer as Theirs
    else:
        from mmseg.models.backbones import SwinTransformer as Theirs
    theirs = Theirs(embed_dims=ARCH['embed_dims'], depths=ARCH['depths'],
                    num_heads=ARCH['num_heads'], window_size=4,
                    drop_path_rate=0., pretrain_img_size=SIZE,
                    use_abs_pos_embed=True)
    randomize_(theirs)
    theirs.eval()
    state = {'backbone.' + k: v for k, v in theirs.state_dict().items()}
    state['decode_head.conv_seg.weight'] = torch.zeros(4, 8, 1, 1)
    path = tmp_path / f'{library}.pth'
    torch.save({'meta': {'mmengine_version': '0.10.7'},
                'state_dict': state}, path)
    ours = _ours(pretrain_img_size=SIZE, use_abs_pos_embed=True)
    report = load_pretrained(ours, str(path))
    assert report.conversion.layout == 'openmmlab'
    assert report.conversion.prefix == 'backbone.'
    assert not report.missing and not report.unexpected
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        _check(theirs(x), ours, x)


def _hf_v1(**kwargs):
    from transformers import SwinBackbone, SwinConfig
    config = SwinConfig(
        embed_dim=ARCH['embed_dims'], depths=list(ARCH['depths']),
        num_heads=list(ARCH['num_heads']), window_size=4, image_size=SIZE,
        drop_path_rate=0., out_features=['stage1', 'stage2', 'stage3',
                                         'stage4'], **kwargs)
    model = randomize_(SwinBackbone(config))
    return model.eval()


def test_hf_swin_new_and_old_names(tmp_path):
    """transformers 5.x module names (``q_proj``, ``o_proj``,
    ``relative_position_bias.*``) from ``state_dict()``, and the 4.x names
    (``attention.self.query``...) that ``save_pretrained`` writes."""
    hf = _hf_v1(use_absolute_embeddings=True)
    new_names = hf.state_dict()
    assert any('.q_proj.' in k for k in new_names)
    torch.save(new_names, tmp_path / 'new.pth')
    hf.save_pretrained(tmp_path / 'old')
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = hf(x).feature_maps
    for path in (tmp_path / 'new.pth', tmp_path / 'old/model.safetensors'):
        ours = _ours(pretrain_img_size=SIZE, use_abs_pos_embed=True)
        report = load_pretrained(ours, str(path))
        assert report.conversion.layout == 'hf'
        assert not report.missing and not report.unexpected, report.format()
        renamed = report.conversion.log.renamed
        assert renamed['layers.0.blocks.0.attn.qkv.weight'].count(' + ') == 2
        _check(expected, ours, x)


def test_hf_swin_classification_model(tmp_path):
    """``SwinForImageClassification``: ``swin.`` prefix, ``classifier`` and
    final ``layernorm`` dropped, per-output norms missing."""
    from transformers import SwinConfig, SwinForImageClassification
    config = SwinConfig(
        embed_dim=ARCH['embed_dims'], depths=list(ARCH['depths']),
        num_heads=list(ARCH['num_heads']), window_size=4, image_size=SIZE,
        num_labels=5)
    hf = randomize_(SwinForImageClassification(config)).eval()
    hf.save_pretrained(tmp_path)
    ours = _ours()
    report = load_pretrained(ours, str(tmp_path / 'model.safetensors'))
    assert report.conversion.prefix == ''
    assert set(report.conversion.log.dropped.values()) == {
        'classification head', 'classification norm'}
    assert len(report.missing) == 8 and not report.unexpected
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        hidden = hf.swin(x, output_hidden_states=True).reshaped_hidden_states
    # HF's last hidden state is after the last stage; mmswin's norm3 is fresh
    last = F.layer_norm(hidden[-1].permute(0, 2, 3, 1), (256, ))
    _check([last.permute(0, 3, 1, 2)], lambda t: ours(t)[3:], x)


def test_hf_swinv2(tmp_path):
    """``Swinv2Backbone``: q/v biases without k bias, ``logit_scale``,
    ``continuous_position_bias_mlp``; it has no output norms, so its stage
    outputs are compared after a plain LayerNorm (mmswin's fresh norm{i})."""
    from transformers import Swinv2Backbone, Swinv2Config
    config = Swinv2Config(
        embed_dim=ARCH['embed_dims'], depths=list(ARCH['depths']),
        num_heads=list(ARCH['num_heads']), window_size=4, image_size=SIZE,
        drop_path_rate=0., out_features=['stage1', 'stage2', 'stage3',
                                         'stage4'])
    hf = randomize_(Swinv2Backbone(config)).eval()
    hf.save_pretrained(tmp_path)
    ours = _ours(version=2)
    report = load_pretrained(ours, str(tmp_path / 'model.safetensors'))
    assert (report.conversion.layout, report.conversion.version) == ('hf', 2)
    assert sorted(report.missing) == sorted(
        f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias'))
    assert not report.unexpected
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = [
            F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2]).permute(
                0, 3, 1, 2) for f in hf(x).feature_maps]
    _check(expected, ours, x)
