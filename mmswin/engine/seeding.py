"""Random generator states derived from a key instead of carried along.

A killed run cannot save the generators of its data-loading worker
processes, and a resumed run starts new ones. So mmswin never lets a random
stream run on across samples or iterations: each sample's data pipeline
and each training iteration draws from generators seeded afresh from a key
such as (seed, rank, epoch, batch, position) or (seed, rank, iteration).
A resumed run recomputes the same keys and so draws the same numbers,
whatever the number of workers or processes.
"""
import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

# First key element after the seed: keeps the data pipeline's streams and
# the training step's streams apart.
DATA_STREAM = 0
TRAIN_STEP_STREAM = 1


def derive_seed(*key: int) -> int:
    """A 64-bit seed that depends on every element of ``key``.

    The key's non-negative ints are hashed by numpy's ``SeedSequence``, so
    keys that differ in any element (say, neighbouring sample positions)
    give unrelated seeds.
    """
    if not key or any(isinstance(k, bool) or not isinstance(
            k, (int, np.integer)) or k < 0 for k in key):
        raise ValueError('derive_seed needs non-negative ints (seed, '
                         f'stream, rank, ...), got {key!r}')
    low, high = np.random.SeedSequence([int(k) for k in key]).generate_state(
        2, np.uint32)
    return int(low) | int(high) << 32


def seed_generators(seed: int, cuda: bool = True) -> None:
    """Seed python's ``random``, numpy's global generator and torch's CPU
    generator (and every CUDA device's, unless ``cuda=False``) from the
    64-bit ``seed``."""
    random.seed(seed)
    np.random.seed([seed & 0xFFFFFFFF, seed >> 32])
    if cuda:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@contextmanager
def generators_seeded(seed: int) -> Iterator[None]:
    """Run the body with python's, numpy's and torch's CPU generators
    seeded from ``seed``, then put back the states they had before.

    The restore matters where data loads in the training process itself
    (``num_workers=0``): loading a sample then leaves the training step's
    random streams untouched.
    """
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    seed_generators(seed, cuda=False)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
