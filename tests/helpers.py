"""Helpers shared by the test modules (their fixtures are in conftest.py).

Test modules import from here, never from each other.
"""
import importlib.util
import os
import os.path as osp
import socket
import subprocess
import sys
from types import ModuleType
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# The repository root: configs/, tools/ and the README are found from here.
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The toy configs (relative to ROOT) that train in seconds on a CPU.
TOY_DET_CONFIG = 'configs/toy/mask-rcnn_swin-toy_fpn_toy-coco.py'
TOY_SEG_CONFIG = 'configs/toy/upernet_swin-toy_toy-ade.py'
# Tools run as subprocesses: no warning noise, one OpenMP thread each (the
# cores are shared), and the launchers (tools/dist_*.sh) use this Python.
TOOL_ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1',
                PYTHON=sys.executable)


def max_abs_diff(a: Sequence[torch.Tensor],
                 b: Sequence[torch.Tensor]) -> List[float]:
    """Per-output max |a - b| after checking that the shapes match."""
    assert len(a) == len(b), (len(a), len(b))
    diffs = []
    for x, y in zip(a, b):
        assert x.shape == y.shape, (x.shape, y.shape)
        diffs.append((x.float() - y.float()).abs().max().item())
    return diffs


def randomize_(module: torch.nn.Module, std: float = 0.05,
               seed: int = 1234) -> torch.nn.Module:
    """Fill every parameter with random values (LayerNorm weights around 1),
    so parity tests exercise every weight rather than a default init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            for name, p in m.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=gen) * std
                is_norm_scale = isinstance(m, torch.nn.LayerNorm) and (
                    name == 'weight')
                p.copy_(1 + noise if is_norm_scale else noise)
    return module


# -- low precision ------------------------------------------------------------
# Unit roundoff (half the spacing of floats in [1, 2)) of the autocast dtypes:
# one rounding to fp16 or bf16 changes a value by at most this, relatively.
UNIT_ROUNDOFF = {torch.float16: 2.**-11, torch.bfloat16: 2.**-8}
# Relative to max |fp32 output|, autocast's error in a Swin backbone's
# LayerNorm-ed outputs is ~5 unit roundoffs (measured: fp16 and bf16, V1
# and V2, 8 blocks); 16 leaves room for other kernels, and dropping the
# position bias in low precision breaks it.
LOW_PRECISION_ROUNDOFFS = 16


def low_precision_bounds(fp32_outputs: Sequence[torch.Tensor],
                         dtype: torch.dtype) -> List[float]:
    """Per output: LOW_PRECISION_ROUNDOFFS * u(dtype) * max |output|."""
    return [LOW_PRECISION_ROUNDOFFS * UNIT_ROUNDOFF[dtype]
            * o.abs().max().item() for o in fp32_outputs]


def ran_only_in(ops: Dict[Tuple[str, Tuple[str, ...]], int],
                dtype: torch.dtype) -> int:
    """The number of ops in a :class:`MatmulDtypes` record whose floating
    inputs were all ``dtype``."""
    return sum(n for (_, dtypes), n in ops.items()
               if dtypes == (str(dtype), ))


class MatmulDtypes(TorchDispatchMode):
    """Records, for every matmul-like op run under it (convolutions, mm,
    addmm, bmm, linear, attention kernels, mmswin's oneDNN linear), the
    floating dtypes of its inputs: ``ops`` maps ``(op name, dtypes)`` to a
    count. Ops are seen at the dispatcher, so which execution path or
    module ran them does not matter."""

    MATMUL_WORDS = ('mm', 'linear', 'attention', 'conv', 'matmul')

    def __init__(self) -> None:
        super().__init__()
        self.ops: Dict[Tuple[str, Tuple[str, ...]], int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if any(word in name for word in self.MATMUL_WORDS):
            dtypes = tuple(sorted({str(a.dtype) for a in args if isinstance(
                a, torch.Tensor) and a.is_floating_point()}))
            self.ops[name, dtypes] = self.ops.get((name, dtypes), 0) + 1
        return func(*args, **(kwargs or {}))


def autocast_vs_fp32(model: torch.nn.Module, x: torch.Tensor,
                     dtype: torch.dtype):
    """``model(x)`` in fp32 and under ``dtype`` autocast (no grad).

    Returns the per-output max abs diffs, their bounds
    (:func:`low_precision_bounds`) and the matmul-like ops autocast ran
    (:class:`MatmulDtypes`)."""
    with torch.no_grad():
        expected = model(x)
        with torch.autocast(x.device.type, dtype=dtype), \
                MatmulDtypes() as seen:
            got = model(x)
    return (max_abs_diff(expected, got), low_precision_bounds(expected, dtype),
            seen.ops)


# -- tools/ scripts -----------------------------------------------------------
def load_tool(relative_path: str) -> ModuleType:
    """Import a script such as ``tools/test.py`` by its path from the repo
    root (``test`` would clash with the standard library's package as a
    plain import, and tools/ is no package)."""
    name = 'tool_' + relative_path.replace('/', '_').replace('.', '_')
    spec = importlib.util.spec_from_file_location(
        name, osp.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ToolRun(NamedTuple):
    """Exit status and the combined stdout + stderr of a subprocess."""
    returncode: int
    log: str


def run_tool(argv: Sequence[str], timeout: float = 600,
             env: Optional[dict] = None) -> ToolRun:
    """Run ``argv`` from the repo root with TOOL_ENV (or ``env``)."""
    result = subprocess.run(list(argv), cwd=ROOT, env=env or TOOL_ENV,
                            capture_output=True, text=True, timeout=timeout)
    return ToolRun(result.returncode, result.stdout + result.stderr)


def run_tool_ok(argv: Sequence[str], timeout: float = 600,
                env: Optional[dict] = None) -> str:
    """run_tool that must exit 0; returns the log."""
    code, log = run_tool(argv, timeout, env)
    assert code == 0, log[-3000:]
    return log


def free_port() -> int:
    """A TCP port nobody listens on now, for a torch.distributed rendezvous.
    """
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


# -- configs and toy data -----------------------------------------------------
def config_path(name: str) -> str:
    """The absolute path of ``configs/<name>.py``."""
    return osp.join(ROOT, 'configs', name + '.py')


def load_config(name: str):
    """The mmengine Config of ``configs/<name>.py``."""
    from mmengine.config import Config
    return Config.fromfile(config_path(name))


def sync_bn_to_bn(cfg) -> None:
    """The CPU override of the UperNet configs: both heads' SyncBN become
    BN (SyncBN needs a process group to train)."""
    for head in ('decode_head', 'auxiliary_head'):
        assert cfg.model[head].norm_cfg.type == 'SyncBN'
        cfg.model[head].norm_cfg.type = 'BN'


def coco_data_options(root: str) -> List[str]:
    """--cfg-options pointing a toy COCO config's loaders and evaluators at
    the toy data under ``root``."""
    options = [f'{loader}.dataset.data_root={root}/' for loader in (
        'train_dataloader', 'val_dataloader', 'test_dataloader')]
    options += [f'{evaluator}.ann_file={root}/annotations/val.json'
                for evaluator in ('val_evaluator', 'test_evaluator')]
    return options


def ade_data_options(root: str) -> List[str]:
    """--cfg-options pointing a toy ADE20K config's loaders at ``root``."""
    return [f'{loader}.dataset.data_root={root}' for loader in (
        'train_dataloader', 'val_dataloader', 'test_dataloader')]
