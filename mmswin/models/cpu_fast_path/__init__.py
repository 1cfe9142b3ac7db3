"""The CPU fast path: eager-only speed-ups behind one switch.

:class:`~mmswin.models.layers.SwinStage` hands its blocks to
:func:`run_stage` when :func:`applies` (CPU, eager: not under
``torch.compile``, ``torch.export``/ONNX export or TorchScript tracing)
and the backbone was built with ``cpu_fast_path=True`` (the default). The
blocks' parameters and formula (:meth:`SwinBlock.residual`) are the same;
what differs is where the tokens live and how the work is cut:

- :mod:`.token_rows`: a stage's tokens stay as rows in window order, so a
  block gathers no windows from a map and back, and a shifted block costs
  one row gather; attention skips the shift mask where no window needs it;
- :mod:`.row_ops`: the MLP in cache-sized row blocks with a hand-written
  backward that saves only fc1's output, its linear layers through
  :func:`.linear.linear` (GELU fused at inference);
- at inference the stage overwrites two buffers of its own, block by
  block in cache-sized pieces.

The plain path in :mod:`mmswin.models.layers` is the specification: tests
compare the two in forward and in gradients. It uses one piece of this
package, :class:`.linear.Linear`: oneDNN's matmul for CPU fp32 linear
layers, in eager mode and under ``torch.compile`` (``F.linear`` under
export).
"""
import torch
import torch.utils.checkpoint as cp

from .linear import cpu_bf16_autocast
from .row_ops import attention_rows, chunk_rows, drop_path_rows, mlp_rows
from .token_rows import (
    WindowRun,
    change_layout,
    enter_layout,
    leave_layout,
    token_layout,
)

__all__ = ['applies', 'run_stage']


def applies(x: torch.Tensor) -> bool:
    """Whether the fast path can run on ``x``: a CPU tensor in eager mode
    (its layouts are index tensors built from concrete sizes), except
    inference under bf16 autocast: there the plain path with the bf16
    oneDNN linear layers was as fast on a quiet machine (Swin-T at
    800x1344, 2 threads: 0.746 vs 0.753 s) and twice as fast on a loaded
    one (CPU seconds 2.9 vs 6.3)."""
    bf16_inference = cpu_bf16_autocast() and not torch.is_grad_enabled()
    return (x.device.type == 'cpu' and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not bf16_inference)


def _block_rows(block, x: torch.Tensor, windows: WindowRun, batch: int,
                position_bias=None) -> torch.Tensor:
    """``block`` on the rows ``x`` of the run ``windows``."""
    return block.residual(
        x, lambda y: attention_rows(block.attn, y, windows, position_bias),
        lambda y: mlp_rows(block.mlp, y),
        lambda y: drop_path_rows(block.drop_path, y, windows, batch))


def _block_rows_in_place(block, x: torch.Tensor, layout) -> torch.Tensor:
    """Inference: ``block`` on ``x`` in cache-sized pieces of whole windows,
    each piece written over its input once it is read."""
    bias = block.attn.position_bias()
    rows = chunk_rows(block.mlp.fc1.out_features)
    for first, stop, run in layout.chunks(rows):
        x[first:stop] = _block_rows(block, x[first:stop], run, layout.batch,
                                    bias)
    return x


def run_stage(stage, x: torch.Tensor) -> torch.Tensor:
    """The blocks of ``stage`` (a :class:`SwinStage`) on a ``(B, H, W, C)``
    map, through token rows; returns ``(B, H, W, C)``."""
    batch, height, width, _ = x.shape
    layouts = {
        shift: token_layout(batch, height, width, stage.window_size, shift,
                            x.device)
        for shift in sorted({block.shift_size for block in stage.blocks})
    }
    layout = layouts[stage.blocks[0].shift_size]
    x = enter_layout(x, layout)
    # Without autograd the rows live in two buffers of the stage's own:
    # each block overwrites its input, each change of layout gathers into
    # the other buffer (fresh maps over 32 MB are page-faulted anew by
    # every op: 1600x2688 took 4.4x the time of 800x1344).
    in_place = not torch.is_grad_enabled() and not stage.training
    spare = None
    for i, block in enumerate(stage.blocks):
        target = layouts[block.shift_size]
        if in_place and target is not layout:
            spare = torch.empty_like(x) if spare is None else spare
            x, spare = change_layout(x, layout, target, out=spare), x
        else:
            x = change_layout(x, layout, target)
        layout = target
        if in_place:
            x = _block_rows_in_place(block, x, layout)
        elif stage.with_cp and x.requires_grad:
            x = cp.checkpoint(_block_rows, block, x, layout.windows,
                              layout.batch, use_reentrant=False)
        else:
            x = _block_rows(block, x, layout.windows, layout.batch)
        x = stage.extra_norm(i, x)
    return leave_layout(x, layout)
