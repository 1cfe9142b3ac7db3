"""The memory planner (tools/analysis_tools/estimate_memory.py) against
memory measured on this CPU: the same training step (forward, backward,
AdamW step after a first step) runs for real, and the peak of live tensor
bytes is read from the CPU allocator's events (torch.profiler with
``profile_memory``: every allocation and free in the allocator, including
kernels' temporaries the planner cannot see) plus the bytes alive before
the step. The planner's traced peak must be within 10% of it, for a
backbone and a whole segmentor, with and without ``with_cp``."""
import os.path as osp
import sys

import pytest
import torch
from helpers import ROOT, TOY_SEG_CONFIG, load_tool
from mmengine.optim import build_optim_wrapper

from mmswin.models import SwinTransformer

sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
from common import peak_memory_bytes  # noqa: E402

OPTIM = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
ARCH = dict(embed_dims=32, depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8))


@pytest.fixture(scope='module')
def planner():
    return load_tool('tools/analysis_tools/estimate_memory.py')


def _storage_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def measured_peak(model, shape, loss_fn) -> int:
    """Peak live bytes of one real steady-state training step."""
    model.train()
    wrapper = build_optim_wrapper(model, dict(OPTIM))
    x = torch.randn(*shape)

    def step():
        wrapper.update_params(loss_fn(model, x))

    step()
    state = [v for s in wrapper.optimizer.state.values() for v in s.values()
             if torch.is_tensor(v)]
    alive = _storage_bytes([*model.parameters(), *model.buffers(), *state,
                            x])
    return alive + peak_memory_bytes(step, torch.device('cpu'))


def _backbone(with_cp: bool, device=None):
    with torch.device(device or 'cpu'):
        return SwinTransformer(arch=ARCH, window_size=7, cpu_fast_path=False,
                               with_cp=with_cp, drop_path_rate=0.)


def _backbone_loss(model, x):
    return sum(o.mean() for o in model(x))


def _segmentor(planner, with_cp: bool, device=None):
    from mmengine.config import Config
    cfg = Config.fromfile(f'{ROOT}/{TOY_SEG_CONFIG}')
    cfg.model.backbone.with_cp = with_cp
    cfg.model.backbone.cpu_fast_path = False
    for head in ('decode_head', 'auxiliary_head'):
        cfg.model[head].norm_cfg = dict(type='BN', requires_grad=True)
    if device == 'meta':
        return planner.build_meta_model(cfg)
    torch.manual_seed(0)
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('what', ['backbone', 'segmentor'])
def test_planner_within_10_percent_of_measured_peak(planner, what, with_cp):
    if what == 'backbone':
        shape, loss_fn = (2, 3, 160, 192), _backbone_loss
        meta, real = (_backbone(with_cp, 'meta'), _backbone(with_cp))
    else:
        shape, loss_fn = (2, 3, 128, 128), planner._segmentor_loss
        meta = _segmentor(planner, with_cp, 'meta')
        real = _segmentor(planner, with_cp)
    estimate = planner.trace_step(meta, shape, loss_fn, dict(OPTIM)).peak
    measured = measured_peak(real, shape, loss_fn)
    error = estimate / measured - 1
    print(f'{what} with_cp={with_cp}: planner {estimate / 2**20:.1f} MiB, '
          f'measured {measured / 2**20:.1f} MiB ({error:+.1%})')
    assert abs(error) <= 0.10


def test_sharding_divides_what_each_scheme_shards(planner, monkeypatch):
    traced = planner.Trace(params=800, grads=400, optim=1600,
                           activations=3000, largest_group=10)
    monkeypatch.setattr(planner, 'trace', lambda cfg, batch, settings: {
        setting: traced for setting in settings})
    args = planner.parse_args(['cfg.py'])
    table = {r.name: r for r in planner.rows(None, 8, 2, args)}
    assert table['fp32'] == ('fp32', 800, 400, 1600, 3000)
    assert table['amp+cp+zero1'] == ('amp+cp+zero1', 800, 400, 200, 3000)
    assert table['fp32+cp+fsdp'] == ('fp32+cp+fsdp', 100 + 20, 50, 200,
                                      3000)
    assert 'fp32+fsdp' not in table  # FSDP2Strategy always checkpoints
    only = planner.rows(None, 8, 2, planner.parse_args(['c', '--fsdp',
                                                        '--amp']))
    assert [r.name for r in only] == ['amp+cp+fsdp']
    need = (1 + 5800 / 2**30) / 0.95  # GiB: peak + CUDA context, 5% spare
    assert planner.fits(table['fp32'], need + 1e-9)
    assert not planner.fits(table['fp32'], need - 1e-9)


def test_zero_and_fsdp_flags_exclude_each_other(planner, capsys):
    with pytest.raises(SystemExit):
        planner.parse_args(['cfg.py', '--zero', '1', '--fsdp'])
    assert '--zero 1 and --fsdp exclude each other' in capsys.readouterr(
    ).err


def test_settings_traced_on_one_model_equal_separate_traces(planner):
    """rows() traces every setting on one model after one warm-up step:
    each must equal a trace of that setting alone on a fresh model."""
    def backbone(with_cp: bool):
        with torch.device('meta'):
            return SwinTransformer(
                arch=dict(embed_dims=16, depths=(1, 1, 1, 1),
                          num_heads=(1, 1, 2, 2)), window_size=4,
                cpu_fast_path=False, with_cp=with_cp, drop_path_rate=0.)

    shape, settings = (1, 3, 64, 96), [(True, True), (False, False)]
    together = planner.trace_steps(backbone(True), shape, _backbone_loss,
                                   dict(OPTIM), settings)
    alone = [planner.trace_step(backbone(cp), shape, _backbone_loss,
                                dict(OPTIM), amp=amp)
             for amp, cp in settings]
    assert together == alone
    assert alone[0] != alone[1]  # the settings differ
