import os

# Before torch starts OpenMP: idle threads sleep rather than spin, which
# matters when subprocess tests share the two cores.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from typing import Callable  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# the deployment tests' exported toy models (session-scoped)
from deploy_fixtures import (  # noqa: E402,F401
    exported_toy_detector,
    exported_toy_segmentor,
)

# the export tests' graphs, each exported once (session-scoped)
from export_graphs import (  # noqa: E402,F401
    backbone_graph,
    cascade_graph,
    det_features_graph,
    faster_rcnn_tool_export,
    mask_rcnn_graph,
    upernet_graph,
)
from helpers import load_tool  # noqa: E402

# Deterministic, small-thread runs: CI has two cores.
THREADS = min(2, os.cpu_count() or 1)
torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    # A tool or benchmark run in-process (`--threads 1`) must not leave
    # its thread count to the tests after it: the resume tests compare
    # in-process training with child processes to 1e-6, and 1 vs 2
    # threads changes the reductions by ~1e-5.
    torch.set_num_threads(THREADS)


# -- device: `pytest --device cuda` (or MMSWIN_TEST_DEVICE=cuda) --------------
# A test that can run on a GPU takes the `device` fixture and puts its models
# and inputs there. With --device cuda only those tests run (`make
# gpu-check`); everything else is the CPU suite of `make test`.
def pytest_addoption(parser):
    parser.addoption(
        '--device', choices=('cpu', 'cuda'),
        default=os.environ.get('MMSWIN_TEST_DEVICE', 'cpu'),
        help='device of the tests that take the `device` fixture; with '
        'cuda, only those run (default: $MMSWIN_TEST_DEVICE or cpu)')


def pytest_collection_modifyitems(config, items):
    if config.getoption('--device') == 'cpu':
        return
    on_device, others = [], []
    for item in items:
        uses_device = 'device' in getattr(item, 'fixturenames', ())
        (on_device if uses_device else others).append(item)
    if others:
        config.hook.pytest_deselected(items=others)
        items[:] = on_device


@pytest.fixture(scope='session')
def device(request) -> torch.device:
    """The device of --device. On CUDA, TF32 is off: the tests' bounds are
    fp32 bounds (autocast tests choose their dtype explicitly)."""
    name = request.config.getoption('--device')
    if name == 'cuda':
        if not torch.cuda.is_available():
            pytest.skip(f'--device cuda: torch {torch.__version__} sees no '
                        'CUDA device')
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return torch.device(name)


def _toy_data_factory(tmp_path_factory, script: str, maker: str,
                      folder: str) -> Callable[..., str]:
    """``make(**params)`` -> root of a toy dataset that ``maker`` in
    tools/misc/``script`` writes with those params; each distinct set of
    params is generated once per session, in its own folder."""
    made = {}

    def make(**params) -> str:
        key = tuple(sorted(params.items()))
        if key not in made:
            root = str(tmp_path_factory.mktemp('toy') / folder)
            getattr(load_tool(f'tools/misc/{script}'), maker)(root, **params)
            made[key] = root
        return made[key]
    return make


@pytest.fixture(scope='session')
def make_toy_coco(tmp_path_factory) -> Callable[..., str]:
    """``make_toy_coco(seed=3, num_train=6, num_val=2)`` -> the root of that
    toy COCO dataset (tools/misc/toy_coco.py), without a trailing slash."""
    return _toy_data_factory(tmp_path_factory, 'toy_coco.py',
                             'make_coco_toy', 'coco')


@pytest.fixture(scope='session')
def make_toy_ade(tmp_path_factory) -> Callable[..., str]:
    """``make_toy_ade(seed=0, num_train=8, num_val=4)`` -> the root of that
    toy ADE20K-format dataset (tools/misc/toy_ade.py)."""
    return _toy_data_factory(tmp_path_factory, 'toy_ade.py', 'make_ade_toy',
                             'ade')
