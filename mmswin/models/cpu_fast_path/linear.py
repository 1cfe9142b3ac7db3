"""Linear layers on oneDNN's fp32 CPU matmul.

:class:`Linear` is an ``nn.Linear`` (same parameters, hooks, init and
state dict) whose forward takes oneDNN's matmul where :func:`uses_onednn`:
fp32 on CPU, autocast off, eager or ``torch.compile`` (inductor keeps the
op as an extern kernel), never under export, whose graph must hold
standard ops only (the op has no ONNX translation). Elsewhere it is
``F.linear``. The blocks' ``qkv``, ``proj``, ``fc1`` (with the MLP's GELU
fused), ``fc2`` and patch merging's ``reduction`` are :class:`Linear`; the
fast path's row functions call :func:`linear` on the same weights.

Under CPU bf16 autocast without autograd (:func:`uses_onednn_bf16`) the
same oneDNN op runs in bf16, as autocast's ``F.linear`` would (bf16
operands, fp32 accumulation, bf16 output), but with the weights cast to
bf16 once and cached (autocast casts every weight on every call: 0.3 of
the bf16 backbone's time went to such copies) and GELU fused.
"""
import functools
import weakref
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import register_flop_formula

# oneDNN's fp32 matmul with an optional fused exact GELU (the op inductor
# emits for CPU linears when freezing weights). On Swin-T's linear shapes at
# 800x1344 it took 21% less time than F.linear's MKL call in one interleaved
# run (2-core AMD EPYC, 1050-8183 rows; large K gained most), and 26% less
# for the input's gradient; the same fp32 arithmetic in another summation
# order (max abs diff 6e-6 at K = 1536).
_ONEDNN_LINEAR = (getattr(torch.ops.mkldnn, '_linear_pointwise', None)
                  if torch.backends.mkldnn.is_available() else None)


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes oneDNN for these operands: fp32 CPU
    tensors, autocast off (else F.linear's dtype rules apply), not under
    export or TorchScript tracing."""
    return (_ONEDNN_LINEAR is not None and x.device.type == 'cpu'
            and x.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled('cpu')
            and not torch.compiler.is_exporting()
            and not torch.jit.is_tracing())


def cpu_bf16_autocast() -> bool:
    """Whether CPU autocast is on with bfloat16."""
    return (torch.is_autocast_enabled('cpu')
            and torch.get_autocast_dtype('cpu') == torch.bfloat16)


@functools.cache
def _onednn_has_bf16() -> bool:
    # a property of the CPU: asked once, not on every linear call
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def uses_onednn_bf16(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes oneDNN's bf16 matmul: CPU bf16 autocast
    on fp32 weights, fp32 or bf16 input, no autograd, eager mode, a CPU
    with bf16 support in oneDNN."""
    return (_ONEDNN_LINEAR is not None and x.device.type == 'cpu'
            and cpu_bf16_autocast()
            and weight.dtype == torch.float32
            and x.dtype in (torch.float32, torch.bfloat16)
            and not needs_autograd(x, weight)
            and not torch.compiler.is_compiling()
            and not torch.compiler.is_exporting()
            and not torch.jit.is_tracing()
            and _onednn_has_bf16())


# id(fp32 parameter) -> (weak reference to it, its _version when cast,
# its bf16 copy). Entries go with their parameter; a changed version
# (optimizer step, load_state_dict, in-place edit) recasts.
_BF16_CACHE: Dict[int, Tuple[weakref.ref, int, torch.Tensor]] = {}


def bf16_copy(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.to(bfloat16)``, cast once per version of ``tensor``."""
    key = id(tensor)
    entry = _BF16_CACHE.get(key)
    if (entry is not None and entry[0]() is tensor
            and entry[1] == tensor._version):
        return entry[2]
    with torch.inference_mode(False), torch.no_grad():
        cast = tensor.detach().to(torch.bfloat16)
    if entry is None or entry[0]() is not tensor:
        weakref.finalize(tensor, _BF16_CACHE.pop, key, None)
    _BF16_CACHE[key] = (weakref.ref(tensor), tensor._version, cast)
    return cast


def needs_autograd(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether autograd records ops on any of ``tensors`` (None skipped)."""
    return torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in tensors)


@torch.library.custom_op('mmswin::onednn_linear', mutates_args=())
def _onednn_linear(x: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor], gelu: bool) -> torch.Tensor:
    """oneDNN's linear of ``(R, C)`` rows (then GELU). A custom op, so that
    ``torch.compile`` keeps it as one opaque kernel: inductor's own lowering
    of the oneDNN op needs weights frozen into the graph."""
    return _ONEDNN_LINEAR(x, weight, bias, 'gelu' if gelu else 'none', [],
                          'none' if gelu else '')


@_onednn_linear.register_fake
def _(x, weight, bias, gelu):
    return x.new_empty(x.shape[0], weight.shape[0])


@register_flop_formula(torch.ops.mmswin.onednn_linear)
def _flops(x_shape, weight_shape, *args, **kwargs) -> int:
    """For ``torch.utils.flop_counter.FlopCounterMode``, as for mm."""
    return 2 * x_shape[0] * x_shape[1] * weight_shape[0]


def _save_operands(ctx, inputs, output) -> None:
    x, weight, bias, gelu = inputs
    if gelu:
        raise NotImplementedError('onednn_linear has no gradient with the '
                                  'fused GELU; use gelu=False and F.gelu')
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad: torch.Tensor):
    """F.linear's backward, with the input's gradient through oneDNN."""
    x, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    # grad @ weight, as a linear layer of the transposed weight.
    gx = linear(grad, weight.t().contiguous()) if need[0] else None
    gw = grad.t() @ x if need[1] else None
    gb = grad.sum(0) if ctx.has_bias and need[2] else None
    return gx, gw, gb, None


_onednn_linear.register_autograd(_backward, setup_context=_save_operands)


def linear(x: torch.Tensor, weight: torch.Tensor,
           bias: Optional[torch.Tensor] = None,
           gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` of ``(..., C)`` tokens, then the exact
    (erf) GELU if ``gelu``: through oneDNN where :func:`uses_onednn` (GELU
    fused without autograd), in bf16 where :func:`uses_onednn_bf16`
    (bf16 output, as under autocast), else through F.linear and F.gelu."""
    if uses_onednn_bf16(x, weight):
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        out = _onednn_linear(rows, bf16_copy(weight),
                             None if bias is None else bf16_copy(bias), gelu)
        return out.view(*x.shape[:-1], weight.shape[0])
    if not uses_onednn(x, weight):
        out = F.linear(x, weight, bias)
        return F.gelu(out) if gelu else out
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    tracked = needs_autograd(x, weight, bias)
    out = _onednn_linear(rows, weight, bias, gelu and not tracked)
    if gelu and tracked:
        out = F.gelu(out)
    return out.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """``nn.Linear`` computed by :func:`linear`, followed by the exact GELU
    if ``gelu`` (fused on oneDNN).

    Shape: ``(..., in_features)`` in, ``(..., out_features)`` out.
    """

    def __init__(self, in_features: int, out_features: int,
                 bias: bool = True, gelu: bool = False) -> None:
        super().__init__(in_features, out_features, bias)
        self.gelu = gelu

    def extra_repr(self) -> str:
        return super().extra_repr() + (', gelu=True' if self.gelu else '')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.gelu)
