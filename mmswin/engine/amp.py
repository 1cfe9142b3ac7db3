"""Mixed-precision training that also runs on CPU."""
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.optim import OptimWrapper

from ..registry import OPTIM_WRAPPERS

_DTYPES = ('float16', 'bfloat16')


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """Mixed-precision training on CUDA or CPU, built on mmengine's public
    :class:`~mmengine.optim.OptimWrapper` methods.

    mmengine's ``AmpOptimWrapper`` refuses to start without an accelerator,
    so ``tools/train.py --amp`` could not run on a CPU machine. This wrapper
    autocasts on ``device`` (default: CUDA when available, else CPU) and
    keeps what mmengine's does: dynamic or static loss scaling for float16
    (a step whose gradients overflow is skipped), gradient clipping and
    accumulation from ``OptimWrapper``, and ``'loss_scaler'`` in the state
    dict, so its checkpoints and ``AmpOptimWrapper``'s resume each other.

    Args:
        loss_scale: ``'dynamic'``, a static scale (float) or GradScaler
            arguments (dict), as in mmengine. Loss scaling only applies to
            float16; bfloat16 has float32's range and needs none.
        dtype: ``'float16'`` or ``'bfloat16'`` (or the torch dtype).
            Default: float16 on CUDA, bfloat16 on CPU (CPU kernels are
            native for bfloat16 and the range avoids overflow).
        device: ``'cuda'`` or ``'cpu'``; default by availability.
        **kwargs: As for :class:`mmengine.optim.OptimWrapper`.
    """

    def __init__(self,
                 loss_scale: Union[str, float, dict] = 'dynamic',
                 dtype: Optional[Union[str, torch.dtype]] = None,
                 device: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.device_type = device or (
            'cuda' if torch.cuda.is_available() else 'cpu')
        if self.device_type not in ('cuda', 'cpu'):
            raise ValueError("device must be 'cuda', 'cpu' or None, got "
                             f'{device!r}')
        if dtype is None:
            dtype = 'float16' if self.device_type == 'cuda' else 'bfloat16'
        if isinstance(dtype, torch.dtype):
            dtype = str(dtype).replace('torch.', '')
        if dtype not in _DTYPES:
            raise ValueError(f'dtype must be one of {_DTYPES} or None, got '
                             f'{dtype!r}')
        self.cast_dtype = getattr(torch, dtype)
        scaling = self.cast_dtype == torch.float16
        # A static scale is passed to every GradScaler.update, as mmengine
        # does; None lets the scale grow and shrink.
        self.static_loss_scale: Optional[float] = None
        if loss_scale == 'dynamic':
            scaler_args = {}
        elif isinstance(loss_scale, float):
            self.static_loss_scale = loss_scale
            scaler_args = dict(init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            scaler_args = dict(loss_scale)
        else:
            raise TypeError("loss_scale must be 'dynamic', a float or a "
                            f'dict, got {loss_scale!r}')
        self.loss_scaler = torch.amp.GradScaler(
            self.device_type, enabled=scaling, **scaler_args)

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """Back-propagate the loss times the current loss scale."""
        super().backward(self.loss_scaler.scale(loss), **kwargs)

    def step(self, **kwargs) -> None:
        """Unscale the gradients, then clip and step as ``OptimWrapper``
        does unless a gradient overflowed; update the loss scale."""
        if not self.loss_scaler.is_enabled():
            super().step(**kwargs)
            return
        self.loss_scaler.unscale_(self.optimizer)
        if self._gradients_finite():
            super().step(**kwargs)
        self.loss_scaler.update(self.static_loss_scale)

    def _gradients_finite(self) -> bool:
        return all(bool(torch.isfinite(p.grad).all())
                   for group in self.optimizer.param_groups
                   for p in group['params'] if p.grad is not None)

    def state_dict(self) -> dict:
        """The optimizer's state dict plus ``'loss_scaler'``."""
        state = super().state_dict()
        state['loss_scaler'] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Inverse of :meth:`state_dict` (also reads ``AmpOptimWrapper``'s
        state dicts)."""
        state_dict = dict(state_dict)
        if 'loss_scaler' in state_dict:
            self.loss_scaler.load_state_dict(state_dict.pop('loss_scaler'))
        super().load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Autocast forward passes (and keep OptimWrapper's gradient
        accumulation context)."""
        with super().optim_context(model), torch.autocast(
                self.device_type, dtype=self.cast_dtype):
            yield


def amp_optim_wrapper_type() -> str:
    """The optim wrapper ``--amp`` should use: mmengine's own where it
    runs (an accelerator is present), else :class:`AutocastOptimWrapper`."""
    return 'AmpOptimWrapper' if torch.cuda.is_available() else \
        'mmswin.AutocastOptimWrapper'
