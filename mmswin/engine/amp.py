"""Mixed-precision training that also runs on CPU."""
from contextlib import contextmanager
from typing import Optional, Union

import torch
import torch.nn as nn
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from ..registry import OPTIM_WRAPPERS

_DTYPES = ('float16', 'bfloat16')


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` on CUDA or CPU.

    mmengine's wrapper refuses to start without an accelerator, so
    ``tools/train.py --amp`` could not run on a CPU machine. This one
    autocasts on ``device`` (default: CUDA when available, else CPU) and
    keeps everything else of mmengine's wrapper (gradient clipping and
    accumulation, ``loss_scaler`` in the state dict, resume).

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
        # AmpOptimWrapper.__init__ asserts an accelerator; its other state
        # (cast_dtype, loss_scaler, _scale_update_param) is set here.
        OptimWrapper.__init__(self, **kwargs)
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
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            scaler_args = {}
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            scaler_args = dict(init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            scaler_args = dict(loss_scale)
        else:
            raise TypeError("loss_scale must be 'dynamic', a float or a "
                            f'dict, got {loss_scale!r}')
        self.loss_scaler = torch.amp.GradScaler(
            self.device_type, enabled=scaling, **scaler_args)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Autocast forward passes (and keep OptimWrapper's gradient
        accumulation context)."""
        with OptimWrapper.optim_context(self, model), torch.autocast(
                self.device_type, dtype=self.cast_dtype):
            yield


def amp_optim_wrapper_type() -> str:
    """The optim wrapper ``--amp`` should use: mmengine's own where it
    runs (an accelerator is present), else :class:`AutocastOptimWrapper`."""
    return 'AmpOptimWrapper' if torch.cuda.is_available() else \
        'mmswin.AutocastOptimWrapper'
