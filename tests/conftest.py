import os

# Before torch starts OpenMP: idle threads sleep rather than spin, which
# matters when subprocess tests share the two cores.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import pytest  # noqa: E402
import torch  # noqa: E402

# Deterministic, small-thread runs: CI has two cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
