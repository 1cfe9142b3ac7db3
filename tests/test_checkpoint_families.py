"""The checkpoint family table (mmswin/checkpoint/families) as the loader and
the converter CLI see it, and one conversion per load.

- Every family of the table has a V1 and a V2 sample here (a family added
  without one fails ``test_every_family_has_samples``); each is detected
  under a prefix, selected by each of its names, refused by the other
  families' names, and gets its Swin version from the family's rule.
- The CLI offers exactly the table's names, and the README's layout table
  names only those.
- ``load_pretrained`` converts once (it used to convert a second time in the
  backbone's load hook); the hook converts a foreign layout once and the
  model's own weights not at all.
"""
import re

import pytest
import torch
from helpers import ROOT, load_tool
from layout_factories import (
    ARCH,
    WINDOW,
    make_model,
    official_layout,
    openmmlab_layout,
    torchvision_layout,
)

import mmswin.checkpoint.loader as loader
from mmswin.checkpoint import (
    FAMILIES,
    LAYOUT_ALIASES,
    convert_state_dict,
    load_pretrained,
    resize_bias_table,
)


def _hf(version: int) -> dict:
    """A transformers SwinModel / Swinv2Model state dict (C=32)."""
    import transformers
    prefix = 'Swin' if version == 1 else 'Swinv2'
    config = getattr(transformers, prefix + 'Config')(
        embed_dim=ARCH['embed_dims'], depths=list(ARCH['depths']),
        num_heads=list(ARCH['num_heads']), window_size=WINDOW, image_size=64)
    model = getattr(transformers, prefix + 'Model')(
        config, add_pooling_layer=False)
    return model.state_dict()


# family name -> (Swin version -> backbone state dict in the family's names)
SAMPLES = {
    'official': lambda v: official_layout(make_model(v).state_dict()),
    'openmmlab': lambda v: openmmlab_layout(make_model(v).state_dict(),
                                            merge_at_start=v == 2),
    'torchvision': lambda v: torchvision_layout(make_model(v).state_dict()),
    'hf': _hf,
}


def test_every_family_has_samples():
    assert sorted(SAMPLES) == sorted(FAMILIES)


@pytest.mark.parametrize('version', [1, 2])
@pytest.mark.parametrize('name', sorted(SAMPLES))
def test_family_detected_selected_and_versioned(name, version):
    family = FAMILIES[name]
    state = {'backbone.' + k: v for k, v in SAMPLES[name](version).items()}
    state['neck.conv.weight'] = torch.zeros(1)
    auto = convert_state_dict(state)
    assert (auto.layout, auto.prefix, auto.version) == (
        name, 'backbone.', version)
    assert auto.ignored == ['neck.conv.weight']
    # only mmswin names remain, and all of the model's but the output norms
    model_keys = set(make_model(version).state_dict())
    assert set(auto.state) <= model_keys
    assert all(re.match(r'norm\d\.', k) for k in model_keys - set(auto.state))
    for alias in family.names:
        chosen = convert_state_dict(state, alias, version=version)
        assert chosen.layout == name and chosen.state.keys() == \
            auto.state.keys()
    for other in FAMILIES.values():
        if other is not family:
            with pytest.raises(ValueError, match='no Swin backbone found: no '
                               f'key ends with {re.escape(other.anchor)}'):
                convert_state_dict(state, other.name)
    with pytest.raises(ValueError, match=f'holds a Swin V{version} backbone '
                       f'\\({name} layout\\) but the model is V{3 - version}'):
        convert_state_dict(state, version=3 - version)


def test_cli_offers_the_tables_names():
    """The converter's --src-format choices are the table's names (the CLI
    kept its own list, which lacked ``mmswin`` and ``openmmlab``)."""
    converter = load_tool('tools/model_converters/convert_checkpoint.py')
    assert sorted(converter.FORMATS) == sorted(['auto', *LAYOUT_ALIASES])
    assert LAYOUT_ALIASES == {name: family.name for family in FAMILIES.values()
                              for name in family.names}
    with pytest.raises(SystemExit):
        converter.parse_args(['a.pth', 'b.pth', '--src-format', 'caffe'])


def test_readme_names_only_the_tables_layouts():
    """The docs' Checkpoints guide names only the table's layouts, and
    each family by its anchor key."""
    with open(f'{ROOT}/docs/en/user_guides/checkpoints.md',
              encoding='utf-8') as f:
        section = f.read()
    formats = re.findall(r'--src-format (\w+)', section)
    formats += re.findall(r'^\|.*\| `(\w+)` \|$', section, re.M)  # column
    assert formats and set(formats) <= {'auto', *LAYOUT_ALIASES}, formats
    for family in FAMILIES.values():  # each is listed by its anchor
        anchor = family.anchor.rsplit('.', 1)[0]
        assert f'`{anchor}' in section, anchor


@pytest.fixture
def conversions(monkeypatch):
    """The layouts each conversion of the loader was asked for."""
    calls = []
    convert = loader.convert_state_dict

    def counted(state, layout='auto', version=None):
        calls.append(layout)
        return convert(state, layout, version)

    monkeypatch.setattr(loader, 'convert_state_dict', counted)
    return calls


@pytest.mark.parametrize('name', ['official', 'openmmlab'])
def test_load_pretrained_converts_once(tmp_path, conversions, name):
    source = make_model()
    path = str(tmp_path / 'ckpt.pth')
    write = official_layout if name == 'official' else openmmlab_layout
    torch.save({'state_dict': write(source.state_dict())}, path)
    model = make_model(seed=99)
    report = load_pretrained(model, path)
    assert conversions == ['auto'], conversions
    assert report.conversion.layout == name and not report.unexpected
    assert torch.equal(model.layers[1].blocks[1].attn.qkv.weight,
                       source.layers[1].blocks[1].attn.qkv.weight)


def test_layout_hook_converts_foreign_weights_once(conversions):
    source, model = make_model(), make_model(seed=99)
    model.load_state_dict(openmmlab_layout(source.state_dict()))
    assert conversions == ['auto']
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_layout_hook_leaves_the_models_own_weights_alone(conversions):
    """mmswin's own state dict (resume, load_from of an mmswin file) is not
    converted; another window's bias tables still are resized."""
    source, model = make_model(), make_model(seed=99)
    model.load_state_dict(source.state_dict())
    assert conversions == []
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    wider = make_model(window_size=7)
    model.load_state_dict(wider.state_dict())
    assert conversions == ['auto']
    key = 'layers.0.blocks.1.attn.relative_position_bias_table'
    assert torch.equal(model.state_dict()[key],
                       resize_bias_table(wider.state_dict()[key], WINDOW))
