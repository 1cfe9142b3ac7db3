"""ZeRO-1 and FSDP2 against DDP: the toy Mask R-CNN trains 5 iterations
in 2 processes (gloo, CPU) under mmengine's Runner (DDP, ZeRO-1) and
FlexibleRunner (FSDP2), from the same initial weights, with a frozen stage,
the paper's paramwise settings and gradient clipping active at every step
(max_norm below every step's norm). Each sharded run must give DDP's
losses and weights; so must ZeRO-1 and FSDP2 training the toy UperNet 2
iterations under bfloat16 autocast (mmswin.AutocastOptimWrapper; the
detector's mmcv CPU ops take float32 only); a run resumed from its
iteration-3 checkpoint must end with the uninterrupted run's weights; the
FSDP checkpoint must be an ordinary full state dict that tools/test.py and
mmswin's loader read.

All runs happen in one pair of spawned processes (imports and the
process group are paid once)."""
import math
import os
import os.path as osp
from typing import Dict

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import (
    ROOT,
    TOY_DET_CONFIG,
    TOY_SEG_CONFIG,
    ade_data_options,
    coco_data_options,
    free_port,
    load_tool,
)
from mmengine.hooks import Hook

WORLD_SIZE = 2
ITERS = 5
RESUME_AT = 3
LR = 1e-3
# Clipping active at every step (the gradient norms are 10 to 30): FSDP must
# clip by the global norm, which torch's clip_grad_norm_ reduces over the
# DTensor shards; a per-shard norm would scale each rank's half differently.
MAX_NORM = 0.5
# One more DDP/ZeRO-1/FSDP trio under bfloat16 autocast (mmswin's
# AutocastOptimWrapper: mmengine's AmpOptimWrapper asserts without CUDA).
AMP_ITERS = 2
AMP_WRAPPER = 'mmswin.AutocastOptimWrapper'
AMP_BOUND = 1e-5
RUNS = ('ddp', 'zero', 'zero_resume', 'fsdp', 'fsdp_resume', 'ddp_amp',
        'zero_amp', 'fsdp_amp')
NO_DECAY = ('norm', 'relative_position_bias_table', 'absolute_pos_embed')


class Recorder(Hook):
    """Each iteration's loss and (clipped-before) gradient norm."""

    def __init__(self) -> None:
        self.losses, self.grad_norms = [], []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        self.losses.append(float(outputs['loss']))
        self.grad_norms.append(
            runner.message_hub.get_scalar('train/grad_norm').current())


def _config(run: str, work_dir: str, data_roots: Dict[str, str],
            out_dir: str):
    """The toy Mask R-CNN's config for ``run``; the toy UperNet's for the
    AMP runs (mmcv's CPU nms and roi_align take float32 only)."""
    from mmengine.config import Config
    amp = run.endswith('_amp')
    cfg = Config.fromfile(osp.join(ROOT, TOY_SEG_CONFIG if amp
                                   else TOY_DET_CONFIG))
    options = ade_data_options(data_roots['ade']) if amp else \
        coco_data_options(data_roots['coco'])
    options = dict(o.split('=', 1) for o in options)
    cfg.merge_from_dict(options)
    cfg.merge_from_dict({
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'model.backbone.frozen_stages': 1,
        'model.backbone.cpu_fast_path': False,  # same arithmetic in all
        'optim_wrapper.clip_grad': dict(max_norm=MAX_NORM),
        'optim_wrapper.optimizer.lr': LR,
    })
    cfg.train_cfg = dict(by_epoch=False, max_iters=ITERS)
    if amp:
        cfg.train_cfg['max_iters'] = AMP_ITERS
        cfg.optim_wrapper.type = AMP_WRAPPER
    else:
        cfg.train_dataloader.dataset.pipeline[3].scale = (64, 64)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.5,
                                by_epoch=False, begin=0, end=ITERS)]
    cfg.default_hooks.checkpoint = dict(
        type='mmswin.ResumableCheckpointHook', by_epoch=False,
        interval=RESUME_AT)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=100)
    cfg.randomness = dict(seed=0, deterministic=True)
    cfg.launcher = 'pytorch'
    cfg.log_level = 'WARNING'
    cfg.work_dir = work_dir
    cfg.load_from = osp.join(out_dir, 'init_seg.pth' if amp else 'init.pth')
    if run.startswith('zero'):
        cfg.merge_from_dict({'optim_wrapper.optimizer.type':
                             'mmswin.ZeroRedundancyOptimizer',
                             'optim_wrapper.optimizer.optimizer_type':
                             'AdamW'})
        cfg.custom_hooks = [dict(type='mmswin.ZeroConsolidateHook')]
    if run.startswith('fsdp'):
        cfg.runner_type = 'FlexibleRunner'
        cfg.strategy = dict(type='mmswin.FSDP2Strategy')
    else:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=False, device_ids=None)
    if run.endswith('resume'):
        cfg.resume = True
        cfg.load_from = osp.join(work_dir, f'iter_{RESUME_AT}.pth')
    return cfg


def _weight_decays(runner) -> Dict[str, float]:
    """Parameter name -> weight decay in the optimizer this rank steps
    (ZeRO: its local optimizer, which holds its shard of the parameters).
    """
    names = {id(p): n for n, p in runner.model.named_parameters()}
    optimizer = runner.optim_wrapper.optimizer
    optimizer = getattr(optimizer, 'optim', optimizer)
    return {names[id(p)].replace('module.', ''): group['weight_decay']
            for group in optimizer.param_groups for p in group['params']}


def _train(run: str, out_dir: str, data_roots: Dict[str, str]) -> dict:
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    work_dir = osp.join(out_dir, run.replace('_resume', ''))
    cfg = _config(run, work_dir, data_roots, out_dir)
    runner = (RUNNERS.build(cfg) if 'runner_type' in cfg else
              Runner.from_cfg(cfg))
    recorder = Recorder()
    runner.register_hook(recorder, priority='LOW')
    runner.train()
    wrapper = runner.optim_wrapper
    result = dict(losses=recorder.losses, grad_norms=recorder.grad_norms,
                  weight_decays=_weight_decays(runner),
                  wrapper=(type(wrapper).__name__,
                           getattr(wrapper, 'cast_dtype', None)))
    if run.startswith('fsdp'):  # a collective: rank 0 gets the full dict
        result['weights'] = runner.strategy.model_state_dict()
    else:
        result['weights'] = {k: v.clone() for k, v in
                             runner.model.module.state_dict().items()}
    if run == 'zero':  # no consolidation since the last step: an error
        optimizer = runner.optim_wrapper.optimizer
        optimizer.step()
        try:
            optimizer.state_dict()
            result['unconsolidated'] = ''
        except RuntimeError as err:
            result['unconsolidated'] = str(err)
    return result


def _worker(rank: int, port: int, out_dir: str,
            data_roots: Dict[str, str]) -> None:
    os.environ['LOCAL_RANK'] = str(rank)  # mmengine's wrap_model reads it
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    try:
        import mmswin  # noqa: F401
        results = {run: _train(run, out_dir, data_roots) for run in RUNS}
        torch.save(results, osp.join(out_dir, f'rank{rank}.pth'))
    finally:
        dist.destroy_process_group()


def _initial_weights(run: str, out_dir: str,
                     data_roots: Dict[str, str]) -> Dict[str, torch.Tensor]:
    """Save the initial weights ``run``'s config loads; returns them."""
    from mmengine.registry import MODELS, init_default_scope
    cfg = _config(run, '', data_roots, out_dir)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = model.state_dict()
    torch.save(dict(state_dict=state), cfg.load_from)
    return state


@pytest.fixture(scope='module')
def runs(tmp_path_factory, make_toy_coco, make_toy_ade):
    data_roots = dict(coco=make_toy_coco(seed=5, num_train=8, num_val=2,
                                         size=64),
                      ade=make_toy_ade(seed=0, num_train=4, num_val=2))
    data_root = data_roots['coco']
    out_dir = str(tmp_path_factory.mktemp('zero_fsdp'))
    init = _initial_weights('ddp', out_dir, data_roots)
    _initial_weights('ddp_amp', out_dir, data_roots)
    mp.spawn(_worker, args=(free_port(), out_dir, data_roots),
             nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(osp.join(out_dir, f'rank{r}.pth'),
                        weights_only=False) for r in range(WORLD_SIZE)]
    return dict(ranks=ranks, init=init, out_dir=out_dir,
                data_root=data_root)


def _max_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item()
               for k in a)


@pytest.mark.parametrize('run, bound', [('zero', 1e-6), ('fsdp', 1e-5)])
def test_sharded_runs_match_ddp(runs, run, bound):
    for rank in runs['ranks']:
        ddp, sharded = rank['ddp'], rank[run]
        assert len(sharded['losses']) == ITERS
        loss_diff = max(abs(a - b) for a, b in zip(ddp['losses'],
                                                   sharded['losses']))
        assert loss_diff <= bound, (ddp['losses'], sharded['losses'])
        # clipping sees the global norm (a per-shard one would be smaller)
        norms = sharded['grad_norms']
        assert max(abs(a - b) / a for a, b in zip(ddp['grad_norms'], norms)
                   ) <= 1e-6, (ddp['grad_norms'], norms)
        assert min(norms) > 10 * MAX_NORM  # clipped at every step
    first = runs['ranks'][0]
    diff = _max_diff(first['ddp']['weights'], first[run]['weights'])
    assert diff <= bound, diff
    # training moved the weights, the frozen stage stayed
    moved = _max_diff(first['ddp']['weights'], runs['init'])
    assert moved > 100 * bound
    for key, value in first[run]['weights'].items():
        if key.startswith(('backbone.patch_embed.', 'backbone.layers.0.')):
            assert torch.equal(value, runs['init'][key]), key


@pytest.mark.parametrize('run', ['zero', 'fsdp'])
def test_sharded_runs_match_ddp_under_bf16_autocast(runs, run):
    for rank in runs['ranks']:
        ddp, sharded = rank['ddp_amp'], rank[f'{run}_amp']
        assert len(sharded['losses']) == AMP_ITERS
        assert all(math.isfinite(v) for v in sharded['losses'])
        assert min(sharded['grad_norms']) > MAX_NORM  # clipped here too
        loss_diff = max(abs(a - b) for a, b in zip(ddp['losses'],
                                                   sharded['losses']))
        assert loss_diff <= AMP_BOUND, (ddp['losses'], sharded['losses'])
    first = runs['ranks'][0]
    assert first[f'{run}_amp']['wrapper'] == ('AutocastOptimWrapper',
                                              torch.bfloat16)
    diff = _max_diff(first['ddp_amp']['weights'],
                     first[f'{run}_amp']['weights'])
    assert diff <= AMP_BOUND, diff


@pytest.mark.parametrize('run', ['zero', 'fsdp'])
def test_resume_equals_uninterrupted(runs, run):
    first = runs['ranks'][0]
    assert len(first[f'{run}_resume']['losses']) == ITERS - RESUME_AT
    assert first[f'{run}_resume']['losses'] == first[run]['losses'][
        RESUME_AT:]
    assert _max_diff(first[run]['weights'],
                     first[f'{run}_resume']['weights']) == 0


@pytest.mark.parametrize('run', ['ddp', 'zero', 'fsdp'])
def test_paramwise_weight_decay_in_the_stepping_optimizer(runs, run):
    seen = {}
    for rank in runs['ranks']:
        seen.update(rank[run]['weight_decays'])
    # every trainable parameter is stepped by some rank (ZeRO: by one)
    trainable = {k for k in runs['ranks'][0]['ddp']['weight_decays']}
    assert set(seen) == trainable
    for name, decay in seen.items():
        expected = 0. if any(k in name for k in NO_DECAY) else 0.05
        assert decay == expected, (name, decay)
    assert any('relative_position_bias_table' in n for n in seen)
    if run == 'zero':  # sharded: the ranks step disjoint halves
        a, b = (set(r[run]['weight_decays']) for r in runs['ranks'])
        assert a and b and not a & b


def test_zero_state_dict_without_consolidation_says_what_to_add(runs):
    message = runs['ranks'][0]['zero']['unconsolidated']
    assert 'mmswin.ZeroConsolidateHook' in message
    assert runs['ranks'][1]['zero']['unconsolidated'] == ''  # {} there


def test_fsdp_checkpoint_is_a_plain_full_state_dict(runs):
    from mmswin.checkpoint import load_pretrained
    from mmswin.models import SwinTransformer
    path = osp.join(runs['out_dir'], 'fsdp', f'iter_{ITERS}.pth')
    checkpoint = torch.load(path, weights_only=False)
    weights = runs['ranks'][0]['fsdp']['weights']
    assert checkpoint['state_dict'].keys() == runs['init'].keys()
    assert _max_diff(checkpoint['state_dict'], weights) == 0
    # optimizer state in full, keyed by parameter name
    assert 'backbone.layers.1.blocks.0.attn.qkv.weight' in checkpoint[
        'optimizer']['state']
    backbone = SwinTransformer(arch=dict(embed_dims=32, depths=(1, 1, 2, 1),
                                         num_heads=(1, 2, 4, 8)))
    load_pretrained(backbone, path, prefix='backbone.')
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, weights['backbone.' + key]), key
    test_tool = load_tool('tools/test.py')
    test_tool.main([
        osp.join(ROOT, TOY_DET_CONFIG), path, '--work-dir',
        osp.join(runs['out_dir'], 'test'), '--cfg-options',
        *coco_data_options(runs['data_root']),
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False'])


@pytest.mark.skipif(torch.cuda.is_available(), reason='asserts only on CPU')
def test_fsdp_with_mmengine_amp_on_cpu_names_the_wrapper_that_runs():
    from mmswin.engine.fsdp import FSDP2Strategy
    cfg = dict(type='AmpOptimWrapper', optimizer=dict(type='AdamW', lr=LR))
    with pytest.raises(ValueError, match="needs CUDA; on CPU use optim_"
                       "wrapper.type='mmswin.AutocastOptimWrapper'"):
        FSDP2Strategy().build_optim_wrapper(cfg, torch.nn.Linear(2, 2))
