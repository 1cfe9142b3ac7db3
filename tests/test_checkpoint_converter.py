"""tools/model_converters/convert_checkpoint.py round-trips: a checkpoint
of each layout, converted to mmswin's ``.pth`` or ``.safetensors``, loads
back into mmswin with every tensor equal to the source model's."""
import re
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import load_tool, run_tool
from layout_factories import (
    make_model,
    official_layout,
    openmmlab_layout,
    timm_layout,
    torchvision_layout,
)
from safetensors.torch import load_file

from mmswin.checkpoint import load_pretrained, read_checkpoint

TOOL = 'tools/model_converters/convert_checkpoint.py'
converter = load_tool(TOOL)


CASES = {
    'official': (1, 'official', lambda sd: {'model': official_layout(sd)}),
    'timm': (2, 'timm', timm_layout),
    'torchvision': (1, 'torchvision', torchvision_layout),
    'mmpretrain': (2, 'mmpretrain', lambda sd: {'state_dict': {
        'backbone.' + k: v for k, v in openmmlab_layout(
            sd, merge_at_start=True).items()}}),
    'mmdet': (1, 'mmdet', lambda sd: {'state_dict': {
        'backbone.' + k: v for k, v in openmmlab_layout(sd).items()}}),
}


@pytest.mark.parametrize('case', sorted(CASES))
@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_round_trip(tmp_path, case, suffix):
    version, fmt, layout = CASES[case]
    source = make_model(version)
    src, dst = tmp_path / 'src.pth', str(tmp_path / f'dst{suffix}')
    torch.save(layout(source.state_dict()), src)
    for src_format in ('auto', fmt):
        assert converter.main([str(src), dst, '--src-format',
                               src_format]) == 0
        state = (load_file(dst) if suffix == '.safetensors' else
                 read_checkpoint(dst)['state_dict'])
        expected = source.state_dict()
        assert set(state) <= set(expected)  # only mmswin names remain
        # classification layouts carry no per-output norms
        missing = set(expected) - set(state)
        assert all(re.match(r'norm\d\.', k) for k in missing)
        for key, value in state.items():
            assert torch.equal(value, expected[key]), key
        model = make_model(version, seed=99)
        report = load_pretrained(model, dst)
        assert report.conversion.layout == 'official'
        assert not report.conversion.log.renamed
        assert not report.unexpected


def test_hf_round_trip(tmp_path):
    from transformers import SwinConfig, SwinModel
    config = SwinConfig(embed_dim=32, depths=[2, 2, 2, 2],
                        num_heads=[1, 2, 4, 8], window_size=4,
                        image_size=64)
    hf = SwinModel(config, add_pooling_layer=False)
    hf.save_pretrained(tmp_path)
    dst = str(tmp_path / 'mmswin.pth')
    assert converter.main([str(tmp_path / 'model.safetensors'), dst]) == 0
    via_file, direct = make_model(seed=1), make_model(seed=2)
    assert load_pretrained(via_file, dst).conversion.layout == 'official'
    load_pretrained(direct, str(tmp_path / 'model.safetensors'))
    assert torch.equal(via_file.patch_embed.proj.weight,
                       hf.embeddings.patch_embeddings.projection.weight)
    for key, value in direct.state_dict().items():
        if not re.match(r'norm\d\.', key):  # not in HF's SwinModel
            assert torch.equal(via_file.state_dict()[key], value), key


def test_cli_window_size(tmp_path):
    """The command line itself, resizing bias tables 4 -> 7."""
    source = make_model()
    src, dst = tmp_path / 'src.pth', tmp_path / 'dst.safetensors'
    torch.save({'model': official_layout(source.state_dict())}, src)
    code, log = run_tool(
        [sys.executable, TOOL, str(src), str(dst), '--window-size', '7'],
        timeout=300)
    assert code == 0, log[-2000:]
    assert 'layout: official (Swin V1)' in log
    state = load_file(str(dst))
    key = 'layers.2.blocks.1.attn.relative_position_bias_table'
    table = source.state_dict()[key]
    expected = F.interpolate(table.t().reshape(1, 4, 7, 7), size=(13, 13),
                             mode='bicubic').reshape(4, 169).t()
    assert (state[key] - expected).abs().max() <= 1e-6
    model = make_model(window_size=7, seed=99)
    assert load_pretrained(model, str(dst)).resized == []


def test_cli_errors(tmp_path, capsys):
    src = tmp_path / 'timm.pth'
    torch.save(timm_layout(make_model(2).state_dict()), src)
    assert converter.main([str(src), str(tmp_path / 'a.pth'),
                           '--window-size', '12']) == 2
    assert 'SwinV2 has no bias tables to resize' in capsys.readouterr().err
    assert converter.main([str(src), str(tmp_path / 'b.pth'),
                           '--src-format', 'torchvision']) == 2
    err = capsys.readouterr().err
    assert 'no Swin backbone found: no key ends with ' \
        'features.1.0.attn.qkv.weight' in err
    assert converter.main([str(tmp_path / 'missing.pth'),
                           str(tmp_path / 'c.pth')]) == 2
    assert 'does not exist' in capsys.readouterr().err
