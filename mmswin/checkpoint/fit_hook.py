"""The fit check where mmengine's Runner loads a checkpoint.

mmengine calls every hook's ``after_load_checkpoint`` with the checkpoint it
has just read, before the weights reach the model: for ``load_from``
(``tools/test.py``, fine-tuning) and for ``resume`` alike. There
:class:`CheckpointFitHook` runs :func:`.fit.check_fit`, refuses or reports,
and leaves in ``checkpoint['state_dict']`` exactly what the model is to
receive, so mmengine's own key-by-key warning stays silent.
"""
from typing import Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import find_latest_checkpoint

from ..registry import HOOKS
from .fit import check_fit, require_fit, state_of

MODES = ('strict', 'allow-partial', 'partial', 'resume')


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Check the checkpoint the Runner loads against its model.

    Args:
        mode: ``'strict'`` (evaluation: refuse a checkpoint that leaves a
            tensor of the model unset or of another shape),
            ``'allow-partial'`` (load what fits, with a warning),
            ``'partial'`` (fine-tuning with ``load_from``: load what fits,
            one summary line) or ``'resume'`` (refuse as ``'strict'``).
        source: The checkpoint's name in the messages (default: the
            latest checkpoint of the work dir when resuming).
        hint: Ends a refusal, e.g. ``'pass --allow-partial to evaluate
            anyway'``.
    """

    priority = 'VERY_HIGH'  # before hooks that copy the weights (EMA)

    def __init__(self, mode: str = 'strict', source: Optional[str] = None,
                 hint: str = '') -> None:
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        self.mode, self.source, self.hint = mode, source, hint

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Refuse (``CheckpointMismatchError``) or report, then replace
        ``checkpoint['state_dict']`` by the model's full state with what
        fits loaded into it."""
        model = runner.model
        # As mmengine's load_state_dict: into what DDP or TTA wraps.
        while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            model = model.module
        source = self.source
        if source is None and self.mode == 'resume':
            source = find_latest_checkpoint(runner.work_dir)
        source = str(source or 'the checkpoint')
        report = check_fit(model, state_of(checkpoint, source), source)
        if self.mode == 'partial':
            report.log_conversions()
            print_log(report.summary(), logger='current')
        else:
            require_fit(report, self.mode == 'allow-partial', self.hint)
        state = model.state_dict()  # what is not loaded keeps its values
        state.update(report.state)
        checkpoint['state_dict'] = state
