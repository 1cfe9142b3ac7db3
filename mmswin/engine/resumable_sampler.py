"""A batch sampler with which a resumed run loads the batches, and draws
the augmentations, of the uninterrupted run.

mmengine seeds each data-loading worker once, when it starts. With
persistent workers a worker's generators then run on across epochs, and a
resumed run starts fresh workers, so it draws other flips, crops and scales
than the run it continues. Here every sample carries its own seed, derived
from (seed, rank, epoch, batch, position in the batch), and the dataset
loads it with the generators seeded from it (:mod:`.seeding`): the
augmentations depend on nothing else, not on the number of workers, on
whether they persist, nor on a restart.
"""
from typing import Any, Iterator, List, NamedTuple, Optional, Tuple

from mmengine.dist import get_rank
from mmengine.logging import MessageHub, print_log
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from torch.utils.data import BatchSampler, Sampler

from ..registry import DATA_SAMPLERS
from .seeding import DATA_STREAM, derive_seed, generators_seeded


class SeededIndex(NamedTuple):
    """A dataset index and the seed its sample's pipeline draws from."""
    index: Any
    seed: int


class SeededLoading:
    """A dataset's ``__getitems__`` (the batched-loading method that
    torch's DataLoader calls in each worker, or in the training process
    when ``num_workers=0``): loads each :class:`SeededIndex` with python's,
    numpy's and torch's generators seeded from its seed. Plain indices (from
    another loader over the same dataset object) load as usual."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __call__(self, items: List[Any]) -> List[Any]:
        samples = []
        for item in items:
            if isinstance(item, SeededIndex):
                with generators_seeded(item.seed):
                    samples.append(self.dataset[item.index])
            else:
                samples.append(self.dataset[item])
        return samples


def load_seeded(dataset) -> None:
    """Make ``dataset`` load :class:`SeededIndex` items with their seeds.

    Sets ``dataset.__getitems__`` on this one object (its class, and so
    every other dataset, is left alone); the object travels to the worker
    processes with it.
    """
    if isinstance(getattr(dataset, '__getitems__', None), SeededLoading):
        return
    try:
        dataset.__getitems__ = SeededLoading(dataset)
    except AttributeError as error:
        raise TypeError(
            f'ResumableBatchSampler needs a dataset object that takes '
            f'attributes, got {type(dataset).__name__} ({error})') from None


@DATA_SAMPLERS.register_module()
class ResumableBatchSampler(Sampler):
    """Batches whose samples carry their own seeds, for exact resume.

    In a config (mmengine builds it with the train loader's ``sampler`` and
    ``batch_size``)::

        train_dataloader = dict(
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_sampler=dict(
                type='mmswin.ResumableBatchSampler',
                # optional: what groups the indices into batches
                batch_sampler=dict(type='AspectRatioBatchSampler')))

    Each batch is a list of :class:`SeededIndex`; the dataset loads every
    sample with the generators seeded from ``(seed, rank, epoch, batch
    number in the epoch, position in the batch)``. Epoch-based loops get
    the epoch from the sampler (mmengine's ``DistSamplerSeedHook`` sets it);
    an infinite sampler is one long epoch 0. So with any number of workers,
    persistent or not, and any number of processes, a sample's
    augmentations are those of the uninterrupted run.

    A run resumed from a checkpoint saved in the middle of an epoch
    (``CheckpointHook(by_epoch=False)`` in an epoch-based loop) would start
    that epoch again from its first batch (mmengine's loop does). This
    sampler skips the batches the run had already trained instead: when the
    loop asks for the epoch's batches, the runner's ``MessageHub`` (filled by
    mmengine's ``RuntimeInfoHook``) says which iteration training is at.
    Only samplers with an ``epoch`` (reshuffled each epoch, such as
    ``DefaultSampler``) skip; iteration-based loops replay their stream
    themselves. The training log then counts the resumed epoch's batches
    from 1 again.

    Args:
        sampler: The index sampler mmengine built from
            ``train_dataloader.sampler``; it needs the ``dataset`` attribute
            that mmengine's samplers have.
        batch_size: ``train_dataloader.batch_size``.
        batch_sampler: Config of the batch sampler that groups the indices
            (built with ``sampler`` and ``batch_size`` in the config's
            default scope), e.g. mmdet's ``AspectRatioBatchSampler``.
            Default: consecutive batches of ``batch_size`` (torch's
            ``BatchSampler``).
        drop_last: Drop a last, partial batch (default batching only).
        seed: First element of every sample's seed key. Default: the
            sampler's ``seed`` (mmengine sets it from ``randomness.seed``).
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 batch_sampler: Optional[dict] = None,
                 drop_last: bool = False,
                 seed: Optional[int] = None) -> None:
        dataset = getattr(sampler, 'dataset', None)
        if dataset is None:
            raise TypeError(
                'ResumableBatchSampler needs a sampler with a `dataset` '
                f'attribute (as mmengine\'s have), got {sampler!r}')
        seed = getattr(sampler, 'seed', None) if seed is None else seed
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(
                'ResumableBatchSampler needs a non-negative int seed: set '
                "randomness.seed in the config or the batch sampler's seed, "
                f'got {seed!r}')
        super().__init__()
        self.sampler = sampler  # DistSamplerSeedHook sets its epoch here
        self.seed = seed
        self.rank = get_rank()
        self._announced: Optional[Tuple[int, int]] = None
        if batch_sampler is None:
            self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        elif isinstance(batch_sampler, dict) and 'type' in batch_sampler:
            self.batch_sampler = MMENGINE_DATA_SAMPLERS.build(
                batch_sampler,
                default_args=dict(sampler=sampler, batch_size=batch_size))
        else:
            raise TypeError('batch_sampler must be None or a config dict '
                            f"with a 'type', got {batch_sampler!r}")
        load_seeded(dataset)

    @property
    def batch_size(self) -> int:
        """Samples per batch (mmengine's FlexibleRunner reads it)."""
        return self.batch_sampler.batch_size

    def __len__(self) -> int:
        """Batches per epoch (for an infinite sampler: per pass over the
        dataset)."""
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[List[SeededIndex]]:
        """This epoch's batches, less those trained before a resume."""
        # Read now, not lazily in the generator: the loop asks for the
        # batches right after its before_train_epoch hooks.
        epoch = getattr(self.sampler, 'epoch', 0)
        return self._batches(epoch, self._batches_trained(epoch))

    def _batches(self, epoch: int,
                 skip: int) -> Iterator[List[SeededIndex]]:
        for number, batch in enumerate(self.batch_sampler):
            if number < skip:
                continue
            yield [
                SeededIndex(index, derive_seed(self.seed, DATA_STREAM,
                                               self.rank, epoch, number,
                                               position))
                for position, index in enumerate(batch)
            ]

    def _batches_trained(self, epoch: int) -> int:
        """How many of ``epoch``'s batches the run has trained: non-zero
        only when an epoch-based run resumes in the middle of an epoch."""
        if not hasattr(self.sampler, 'epoch'):
            return 0
        hub = MessageHub.get_current_instance()
        if hub.get_info('loop_stage') != 'train' or (
                hub.get_info('epoch') != epoch):
            return 0
        trained = hub.get_info('iter', 0) - epoch * len(self)
        if not 0 < trained < len(self):
            return 0
        if self._announced != (epoch, trained):  # torch asks twice
            self._announced = (epoch, trained)
            print_log(
                f'Resuming in the middle of epoch {epoch + 1}: skipping the '
                f'{trained} of its {len(self)} batches trained before the '
                'checkpoint.', logger='current')
        return trained
