"""GPU memory per process of training an mmdet or mmseg config, and which
memory settings fit a GPU.

    python tools/analysis_tools/estimate_memory.py CONFIG [--gpus N]
        [--batch-per-gpu B] [--amp] [--with-cp] [--zero 1] [--fsdp]
        [--gpu-mem GIB] [--cfg-options KEY=VALUE ...]

Nothing is allocated: the model is built on the meta device, turned into
fake tensors (``FakeTensorMode``) and one training step (forward,
backward, AdamW step, after a first step that creates the optimizer
state; one model and one first step serve every setting asked for) is
traced by torch's ``MemTracker``, which follows every tensor's
storage as it is created and freed and reports the peak by kind:
parameters, gradients, optimizer state, activations (plus temporaries).
Mixed precision is traced under autocast (bfloat16), ``with_cp`` with the
backbone's checkpointing on. The input is the config's training size
(mmseg: the crop, ``data_preprocessor.size``; mmdet: the largest resize
scale of the train pipeline, padded to the preprocessor's divisor) at
``--batch-per-gpu`` images.

What runs: segmentors run backbone, neck, decode and auxiliary heads and
their losses on a fake label map (as ``loss_by_feat``, less the accuracy,
whose boolean indexing has a data-dependent size); detectors run the backbone,
neck and the RPN head's convolutions for real, and the RoI heads on fake
RoI features of the sampler's size (``rcnn.sampler.num`` RoIs per image,
``pos_fraction`` of them through the mask head; RoIAlign and NMS need
values, which fake tensors have none of).

Sharding is applied to the traced numbers: ZeRO-1 keeps 1/N of the
optimizer state; FSDP keeps 1/N of parameters, gradients and optimizer
state plus the largest shard group's gathered parameters twice (current
and prefetched), and checkpoints each block (mmswin.FSDP2Strategy's
default), so its activations are the with_cp trace. The verdict adds
1 GiB for the CUDA context and keeps 5% for allocator fragmentation.
"""
import argparse
import itertools
import logging
import os.path as osp
import sys
from typing import (
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
)

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from tool_utils import DictAction, fail, load_config  # noqa: E402

GIB = 2**30
CONTEXT_BYTES = GIB  # CUDA context and kernels, outside the allocator
USABLE = 0.95  # what the allocator's fragmentation leaves


class Trace(NamedTuple):
    """Bytes at the traced step's peak, by kind (gradients: those alive at
    the peak)."""
    params: int
    grads: int
    optim: int
    activations: int  # activations + temporaries + buffers + other
    largest_group: int  # params of the biggest FSDP shard group

    @property
    def peak(self) -> int:
        return self.params + self.grads + self.optim + self.activations


class Row(NamedTuple):
    """One memory setting's bytes per GPU."""
    name: str
    params: int
    grads: int
    optim: int
    activations: int

    @property
    def peak(self) -> int:
        return self.params + self.grads + self.optim + self.activations


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Estimate training memory')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--gpus', type=int, default=8,
                        help='processes (GPUs) sharing the batch')
    parser.add_argument('--batch-per-gpu', type=int,
                        help='images per GPU (default: the config\'s '
                        'train_dataloader.batch_size)')
    parser.add_argument('--amp', action='store_true',
                        help='only settings with mixed precision')
    parser.add_argument('--with-cp', action='store_true',
                        help='only settings with activation checkpointing')
    parser.add_argument('--zero', type=int, choices=[1],
                        help='only ZeRO-1 settings')
    parser.add_argument('--fsdp', action='store_true',
                        help='only FSDP settings')
    parser.add_argument('--gpu-mem', type=float, default=None,
                        help='GPU memory in GiB: say which settings fit')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    args = parser.parse_args(argv)
    if args.gpus < 1 or (args.batch_per_gpu is not None
                         and args.batch_per_gpu < 1):
        parser.error('--gpus and --batch-per-gpu must be >= 1')
    if args.zero and args.fsdp:
        parser.error('--zero 1 and --fsdp exclude each other (FSDP shards '
                     'the optimizer state already)')
    return args


def _scales(node) -> Iterator[Tuple[int, int]]:
    """Every ``scale``/``scales`` pair in a pipeline config tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ('scale', 'scales') and isinstance(value, (list, tuple)):
                pairs = value if isinstance(value[0], (list, tuple)) else [
                    value]
                yield from (tuple(p) for p in pairs if len(p) == 2)
            else:
                yield from _scales(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _scales(value)


def training_size(cfg) -> Tuple[int, int]:
    """``(H, W)`` of a training batch: mmseg's crop, or mmdet's largest
    resize scale (landscape) padded to the preprocessor's divisor."""
    pre = cfg.model.get('data_preprocessor') or {}
    if pre.get('size'):
        return tuple(pre['size'])
    scales = list(_scales(cfg.train_dataloader.dataset))
    if not scales:
        fail('no training size found: the config has neither '
             'model.data_preprocessor.size nor a resize scale in '
             'train_dataloader.dataset.pipeline')
    long_side = max(max(s) for s in scales)
    short_side = max(min(s) for s in scales)
    div = pre.get('pad_size_divisor', 1)
    return (-(-short_side // div) * div, -(-long_side // div) * div)


def build_meta_model(cfg):
    """The config's model on the meta device (no weights are allocated or
    initialised)."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def _detector_loss(model, x: torch.Tensor, cfg) -> torch.Tensor:
    feats = model.extract_feat(x)
    loss = sum(f.float().mean() for f in feats)
    if getattr(model, 'rpn_head', None) is not None:
        for outputs in model.rpn_head(feats):
            loss = loss + sum(o.float().mean() for o in outputs)
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        return loss
    rcnn = _as_list(cfg.model.train_cfg.rcnn)
    bbox_heads = _as_list(roi_head.bbox_head)
    mask_heads = _as_list(roi_head.mask_head) if roi_head.with_mask else []
    extractors = _as_list(roi_head.mask_roi_extractor) if mask_heads else []
    for stage, (head, train_cfg) in enumerate(zip(bbox_heads, rcnn)):
        rois = x.shape[0] * train_cfg.sampler.num
        feat = torch.randn(rois, head.in_channels, *_pair(head.roi_feat_size),
                           dtype=x.dtype)
        loss = loss + sum(o.float().mean() for o in head(feat))
        if mask_heads:
            mask = mask_heads[min(stage, len(mask_heads) - 1)]
            layer = extractors[min(stage, len(extractors) - 1)].roi_layers[0]
            pos = int(rois * train_cfg.sampler.pos_fraction)
            feat = torch.randn(pos, mask.in_channels,
                               *_pair(layer.output_size), dtype=x.dtype)
            loss = loss + mask(feat).float().mean()
    return loss


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple,
                                             torch.nn.ModuleList)) else [value]


def _pair(value) -> Tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,
                                                                  value)


def _segmentor_loss(model, x: torch.Tensor) -> torch.Tensor:
    """The decode and auxiliary heads' losses as their ``loss_by_feat``
    computes them (logits resized to the label map), less the accuracy
    (its boolean indexing has a data-dependent size)."""
    import torch.nn.functional as F
    feats = model.extract_feat(x)
    heads = [model.decode_head]
    aux = getattr(model, 'auxiliary_head', None)
    if aux is not None:
        heads += list(aux) if isinstance(aux, torch.nn.ModuleList) else [aux]
    labels = torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.long)
    loss = 0
    for head in heads:
        logits = F.interpolate(head(feats), size=x.shape[-2:],
                               mode='bilinear',
                               align_corners=head.align_corners)
        losses = head.loss_decode
        for module in (losses if isinstance(losses, torch.nn.ModuleList)
                       else [losses]):
            loss = loss + module(logits, labels,
                                 ignore_index=head.ignore_index)
    return loss


def trace_steps(model, input_shape: Tuple[int, ...], loss_fn: Callable,
                optim_cfg: dict,
                settings: Sequence[Tuple[bool, Optional[bool]]]
                ) -> List[Trace]:
    """Trace one steady-state training step of ``model`` (built on the
    meta device) per ``(amp, with_cp)`` setting on a fake input of
    ``input_shape``: ``loss_fn(model, x)`` (under bfloat16 autocast with
    ``amp``, with the Swin stages' ``with_cp`` set unless it is None),
    backward, optimizer step through an mmengine optim wrapper built from
    ``optim_cfg``. One model and one warm-up step serve every setting: a
    traced step leaves the state it found (parameters, optimizer state, no
    gradients), so each setting is traced as if it ran alone."""
    from mmengine.optim import build_optim_wrapper
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    traces = []
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device='cpu')  # fake parameters
        model.train()
        wrapper = build_optim_wrapper(model, optim_cfg)
        x = torch.randn(*input_shape)

        def step(amp: bool, with_cp: Optional[bool]) -> None:
            if with_cp is not None:
                for module in model.modules():
                    if type(module).__name__ == 'SwinStage':
                        module.with_cp = with_cp
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
                loss = loss_fn(model, x)
            wrapper.update_params(loss)

        step(*settings[0])  # creates the optimizer state
        for amp, with_cp in settings:
            tracker = MemTracker()
            tracker.track_external(model, wrapper.optimizer)
            with tracker:
                step(amp, with_cp)
            peak = tracker.get_tracker_snapshot('peak')[torch.device('cpu')]
            params, grads, optim = (peak.get(k, 0) for k in (
                'Parameter', 'Gradient', 'Optstate'))
            traces.append(Trace(params, grads, optim,
                                peak['Total'] - params - grads - optim,
                                _largest_group(model)))
    return traces


def trace_step(model, input_shape: Tuple[int, ...], loss_fn: Callable,
               optim_cfg: dict, amp: bool = False) -> Trace:
    """:func:`trace_steps` for one setting (the model's own ``with_cp``)."""
    return trace_steps(model, input_shape, loss_fn, optim_cfg,
                       [(amp, None)])[0]


def trace(cfg, batch: int, settings: Sequence[Tuple[bool, bool]]
          ) -> Dict[Tuple[bool, bool], Trace]:
    """Trace one steady-state training step of ``cfg``'s model per
    ``(amp, with_cp)`` setting."""
    cfg = cfg.copy()
    cfg.model.backbone.with_cp = settings[0][1]
    cfg.model.backbone.cpu_fast_path = False  # the GPU's path
    height, width = training_size(cfg)
    optim_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
    # AdamW's state, unsharded: the rows divide it for ZeRO and FSDP.
    optim_cfg['optimizer'] = dict(optim_cfg['optimizer'], type='AdamW')
    optim_cfg['optimizer'].pop('optimizer_type', None)
    optim_cfg.pop('loss_scale', None)
    if 'decode_head' in cfg.model:
        loss_fn = _segmentor_loss
    else:
        def loss_fn(model, x):
            return _detector_loss(model, x, cfg)
    traced = trace_steps(build_meta_model(cfg), (batch, 3, height, width),
                         loss_fn, optim_cfg, settings)
    return dict(zip(settings, traced))


def _largest_group(model) -> int:
    """Bytes of the largest FSDP2Strategy shard group's own parameters."""
    from mmswin.engine.fsdp import SWIN_SHARD_TYPES
    largest = 0
    for module in model.modules():
        if type(module).__name__ in SWIN_SHARD_TYPES[:2]:
            largest = max(largest, sum(p.numel() * p.element_size()
                                       for p in module.parameters()))
    return largest


def rows(cfg, gpus: int, batch: int, args) -> List[Row]:
    """The memory settings the flags ask for, bytes per GPU each."""
    wanted = []
    for shard, amp, cp in itertools.product(('ddp', 'zero1', 'fsdp'),
                                            (False, True), (False, True)):
        if (args.amp and not amp) or (args.with_cp and not cp) or (
                args.zero and shard != 'zero1') or (
                    args.fsdp and shard != 'fsdp'):
            continue
        if shard == 'fsdp' and not cp:
            continue  # the strategy checkpoints every block
        wanted.append((shard, amp, cp))
    traces = trace(cfg, batch, list(dict.fromkeys(
        (amp, cp) for _, amp, cp in wanted)))
    out = []
    for shard, amp, cp in wanted:
        t = traces[amp, cp]
        name = '+'.join(['fp32' if not amp else 'amp'] + (['cp'] if cp else [])
                        + ([shard] if shard != 'ddp' else []))
        if shard == 'ddp':
            out.append(Row(name, t.params, t.grads, t.optim, t.activations))
        elif shard == 'zero1':
            out.append(Row(name, t.params, t.grads, t.optim // gpus,
                           t.activations))
        else:
            out.append(Row(name, t.params // gpus + 2 * t.largest_group,
                           t.grads // gpus, t.optim // gpus, t.activations))
    return out


def fits(row: Row, gpu_mem_gib: float) -> bool:
    """Whether ``row`` fits a GPU of ``gpu_mem_gib`` GiB."""
    return row.peak + CONTEXT_BYTES <= USABLE * gpu_mem_gib * GIB


def main(argv: Optional[List[str]] = None) -> List[Row]:
    """Print the table (and the verdict); returns the rows."""
    args = parse_args(argv)
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # paramwise
    cfg = load_config(args.config, args.cfg_options)
    batch = args.batch_per_gpu or cfg.train_dataloader.batch_size
    height, width = training_size(cfg)
    table = rows(cfg, args.gpus, batch, args)
    print(f'{osp.basename(args.config)}: {batch} x 3 x {height} x {width} '
          f'per GPU, {args.gpus} GPUs; GiB per GPU')
    print(f'{"setting":<18}{"params":>8}{"grads":>8}{"optim":>8}'
          f'{"activ.":>8}{"peak":>8}')
    for row in table:
        print(f'{row.name:<18}' + ''.join(
            f'{v / GIB:>8.2f}' for v in (row.params, row.grads, row.optim,
                                         row.activations, row.peak)))
    if args.gpu_mem is not None:
        good = [r.name for r in table if fits(r, args.gpu_mem)]
        print(f'fits {args.gpu_mem:g} GiB: ' + (', '.join(good) or 'none of '
              'these settings; lower --batch-per-gpu'))
    return table


if __name__ == '__main__':
    main()
