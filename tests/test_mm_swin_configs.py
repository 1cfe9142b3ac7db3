"""Every Swin config shipped inside the installed mmdet and mmseg works with
``type='mmswin.SwinTransformer'`` (README: "accepts every argument of
mmdet's and mmseg's SwinTransformer").

For each config under ``mmdet/.mim/configs`` and ``mmseg/.mim/configs``
whose model has a ``SwinTransformer`` backbone, with its pretrained
checkpoints removed (nothing downloads):

- the whole model, backbone type swapped, builds through the library's own
  registry; where the library cannot build its own model here either (a
  text encoder to download, fairscale, an FPN argument this mmdet lacks)
  and fails with the same error, that build is skipped and the reason
  printed; an error of mmswin's own fails the test (measured: 73 skipped,
  38 for the text encoder, 34 for fairscale, which then fail for the text
  encoder too, 1 for the FPN argument);
- once per distinct backbone setting, mmswin's backbone (built from the
  config's own arguments) loads the library backbone's weights through its
  layout-converting ``load_state_dict`` and gives the same outputs at an odd
  size, 97x131, within 6e-5 (about 10x the measured maximum).

Measured (CPU, fp32): 120 configs, 35 distinct backbone settings (one of
them mmdet's five-stage RTMDet-P6 Swin-B), max abs diff 6.2e-6.
"""
import contextlib
import copy
import gc
import glob
import importlib
import json
import os.path as osp
import re
from typing import Dict, Iterator, List, Optional, Tuple
from unittest import mock

import pytest
import torch
from helpers import max_abs_diff
from mmengine.config import Config
from mmengine.registry import DefaultScope, init_default_scope

from mmswin.models import SwinTransformer

LIBRARIES = ('mmdet', 'mmseg')
SIZE = (97, 131)
TOL = 6e-5


def _config_root(library: str) -> str:
    package = importlib.util.find_spec(library).origin
    return osp.join(osp.dirname(package), '.mim', 'configs')


def shipped_swin_configs() -> List[Tuple[str, str]]:
    """``(library, config path relative to its configs)`` of every shipped
    config that names Swin in its path or text (one that inherits a Swin
    model names it in its ``_base_`` path; loading every config of both
    libraries finds no Swin model elsewhere)."""
    found = []
    for library in LIBRARIES:
        root = _config_root(library)
        for path in sorted(glob.glob(osp.join(root, '**', '*.py'),
                                     recursive=True)):
            relative = osp.relpath(path, root)
            if '_base_' in relative.split(osp.sep):
                continue
            with open(path) as f:
                if 'swin' in (relative + f.read()).lower():
                    found.append((library, relative))
    return found


CONFIGS = shipped_swin_configs()


def _drop_pretrained(cfg) -> None:
    """Remove every ``init_cfg`` and ``pretrained`` entry, in place."""
    if isinstance(cfg, dict):
        for key in [k for k in cfg if k in ('init_cfg', 'pretrained')]:
            del cfg[key]
        for value in cfg.values():
            _drop_pretrained(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _drop_pretrained(value)


def _key(cfg) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True, default=repr)


def _try_build(registry, cfg) -> Tuple[Optional[torch.nn.Module],
                                         Optional[Exception]]:
    try:
        return registry.build(copy.deepcopy(cfg)), None
    except Exception as err:  # noqa: BLE001 (any failure is reported)
        return None, err


def _error_text(err: Exception) -> str:
    """``Type: message``, object addresses blanked (two builds create
    different objects)."""
    return re.sub(r'0x[0-9a-f]+', '0x?', f'{type(err).__name__}: {err}')


def _perturb_tables_and_norms_(backbone: torch.nn.Module) -> None:
    """mmdet and mmseg create the relative position bias tables as zeros and
    the LayerNorms as identities (their Linear layers start random); add
    noise to every 1-D parameter and table so the comparison exercises them.
    """
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in backbone.named_parameters():
            if param.dim() == 1 or name.endswith(
                    'relative_position_bias_table'):
                param.add_(torch.randn(param.shape, generator=gen) * 0.05)


@contextlib.contextmanager
def _no_random_init() -> Iterator[None]:
    """Skip PyTorch's random init of Linear and conv weights (a Swin-L takes
    1.5 s): whole models are only built, and the one backbone of theirs that
    is compared loads the library backbone's weights, every one of them."""
    def keep_empty(module: torch.nn.Module) -> None:
        pass
    with mock.patch.object(torch.nn.Linear, 'reset_parameters', keep_empty), \
            mock.patch.object(torch.nn.modules.conv._ConvNd,
                              'reset_parameters', keep_empty):
        yield


@pytest.fixture(scope='module')
def outcomes() -> Dict[str, Dict[str, object]]:
    """What the configs share: the max abs diff per distinct backbone
    setting, and the build outcome (None: built) per distinct model."""
    return dict(backbones={}, models={})


@pytest.fixture(scope='module')
def _frozen_imports() -> Iterator[None]:
    """Exempt the objects that exist already (imports: ~0.5 M) from garbage
    collection while the walk runs, so that collecting costs microseconds
    instead of 0.5 s."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _free_models(_frozen_imports) -> Iterator[None]:
    """Free each test's models at once: detectors hold reference cycles,
    and a Swin-L model waiting for the garbage collector is 1.5 GB."""
    yield
    gc.collect()


@pytest.fixture
def offline_hub(monkeypatch) -> None:
    """Text encoders (GLIP, Grounding DINO) fail at once instead of trying
    to download."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('TRANSFORMERS_OFFLINE', '1')
    constants = pytest.importorskip('huggingface_hub.constants')
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)


def test_the_walk_finds_the_configs_of_the_issue():
    assert len(CONFIGS) >= 120, len(CONFIGS)
    assert ('mmdet', 'rtmdet/rtmdet_l_swin_b_p6_4xb16-100e_coco.py') in \
        CONFIGS  # the five-stage Swin


class FailingRegistry:
    """A registry whose builds raise: ``errors[backbone type]``."""

    def __init__(self, errors: Dict[str, Exception]) -> None:
        self.errors = errors

    def build(self, cfg):
        raise self.errors[cfg['backbone']['type']]


@pytest.mark.parametrize('ours, same', [
    (OSError("We couldn't connect to 'https://huggingface.co'"), True),
    (ValueError('out_indices must be an int in [0, 3], got 4'), False),
    (OSError('another message'), False)])
def test_whole_model_build_skips_only_on_the_same_error(ours, same):
    """The whole-model build is skipped only when mmswin's model fails with
    the library's own model's error; any other error of mmswin's fails."""
    theirs = OSError("We couldn't connect to 'https://huggingface.co'")
    registry = FailingRegistry({'SwinTransformer': theirs,
                                'mmswin.SwinTransformer': ours})
    cfg = Config(dict(model=dict(backbone=dict(type='SwinTransformer'))))
    swapped = copy.deepcopy(cfg.model)
    swapped.backbone.type = 'mmswin.SwinTransformer'
    outcomes = dict(models={})
    if same:
        assert _build_whole_model(registry, cfg.model, swapped,
                                  outcomes) is None
        assert 'with the same error (OSError' in outcomes['models'][
            _key(cfg.model)]
    else:
        with pytest.raises(AssertionError, match='fails differently with '
                           f'mmswin.s backbone: {type(ours).__name__}'):
            _build_whole_model(registry, cfg.model, swapped, outcomes)


@pytest.mark.parametrize('library, config', CONFIGS,
                         ids=[f'{lib}:{cfg}' for lib, cfg in CONFIGS])
def test_shipped_config_runs_with_mmswin_backbone(library, config, outcomes,
                                                  offline_hub):
    model_cfg = Config.fromfile(osp.join(_config_root(library),
                                         config)).model
    assert model_cfg.backbone.type == 'SwinTransformer', model_cfg.backbone
    _drop_pretrained(model_cfg)
    swapped = copy.deepcopy(model_cfg)
    swapped.backbone.type = 'mmswin.SwinTransformer'
    registry = importlib.import_module(f'{library}.registry').MODELS
    init_default_scope(library)
    with DefaultScope.overwrite_default_scope(library):
        model = _build_whole_model(registry, model_cfg, swapped, outcomes)
        backbone_key = _key(model_cfg.backbone)
        if backbone_key not in outcomes['backbones']:
            ours = model.backbone if model is not None else registry.build(
                copy.deepcopy(swapped.backbone))
            theirs = registry.build(copy.deepcopy(model_cfg.backbone))
            outcomes['backbones'][backbone_key] = _max_diff(theirs, ours)
            print(f'{library}:{config}: max abs diff '
                  f'{outcomes["backbones"][backbone_key]:.2e}')
    diff = outcomes['backbones'][backbone_key]
    assert diff <= TOL, f'{config}: max abs diff {diff:.2e}'
    skipped = outcomes['models'][_key(model_cfg)]
    if skipped:
        message = f'backbone matches (max abs diff {diff:.1e}); {skipped}'
        print(message)
        pytest.skip(message)


def _build_whole_model(registry, model_cfg, swapped,
                       outcomes) -> Optional[torch.nn.Module]:
    """The swapped model, built once per distinct model (None when this
    model was built before or the library cannot build it here)."""
    key = _key(model_cfg)
    if key in outcomes['models']:
        return None
    with _no_random_init():
        model, err = _try_build(registry, swapped)
        if err is not None:
            _, library_err = _try_build(registry, model_cfg)
    if err is not None:
        assert library_err is not None, (
            f'the model builds with the library\'s backbone but not with '
            f'mmswin\'s: {type(err).__name__}: {err}')
        ours, theirs = _error_text(err), _error_text(library_err)
        assert ours == theirs, (
            'the whole model fails differently with mmswin\'s backbone: '
            f'{ours} (the library\'s own: {theirs})')
        outcomes['models'][key] = (
            'whole-model build skipped: the library cannot build its own '
            f'model here either, with the same error ({theirs[:160]})')
        return None
    assert isinstance(model.backbone, SwinTransformer)
    outcomes['models'][key] = None
    return model


def _max_diff(theirs: torch.nn.Module, ours: SwinTransformer) -> float:
    """Max abs diff of the two backbones' outputs at SIZE, ours holding
    their (perturbed) weights."""
    theirs.eval()  # returns None in mmdet/mmseg, so not chained
    _perturb_tables_and_norms_(theirs)
    ours.load_state_dict(theirs.state_dict())  # converts their layout
    ours.eval()
    x = torch.randn(1, ours.in_channels, *SIZE,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return max(max_abs_diff(theirs(x), ours(x)))
