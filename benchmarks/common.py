"""Shared benchmark utilities: device set-up, interleaved timing, peak
memory, tables and JSON results.

Every benchmark times its implementations side by side in one process:
each repeat runs every implementation once, in turn, so a burst of load
from other processes hits all of them alike; the reported number is the
median over repeats, with the spread (max/min - 1 of the timed repeats)
as the noise estimate.
"""
import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

import torch

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           'results')
DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def add_common_args(parser: argparse.ArgumentParser,
                    repeats: int = 5) -> argparse.ArgumentParser:
    """Options every benchmark script shares."""
    parser.add_argument('--device', default='cpu',
                        help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--threads', type=int, default=2,
                        help='torch.set_num_threads on CPU (default 2)')
    parser.add_argument('--dtype', default='fp32',
                        choices=sorted(DTYPES) + ['all'],
                        help="'fp32', autocast 'bf16' / 'fp16', or 'all' "
                        "(fp32 and bf16)")
    parser.add_argument('--repeats', type=int, default=repeats,
                        help='timed runs per implementation (median reported)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed runs per implementation first')
    parser.add_argument('--out', default=None,
                        help='JSON path (default: benchmarks/results/)')
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and check ``--device``; returns the device."""
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: torch.cuda.is_available() '
                         'is False on this machine; use --device cpu')
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit('--repeats must be >= 1 and --warmup >= 0')
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if device.type == 'cuda':
        # Full fp32 matmuls, so fp32 numbers are not silently TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def dtype_names(args: argparse.Namespace) -> List[str]:
    """The precisions ``--dtype`` asks for."""
    return ['fp32', 'bf16'] if args.dtype == 'all' else [args.dtype]


def autocast(device: torch.device, dtype_name: str):
    """Autocast context for ``dtype_name`` (a no-op context for fp32)."""
    dtype = DTYPES[dtype_name]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times are complete."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def machine(device: torch.device) -> Dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    info: Dict[str, object] = dict(
        cpu=cpu, cpu_count=os.cpu_count(), threads=torch.get_num_threads(),
        torch=torch.__version__, python=platform.python_version(),
        omp_wait_policy=os.environ.get('OMP_WAIT_POLICY', 'default'),
        device=str(device))
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info


def time_interleaved(fns: Dict[str, Callable[[], object]],
                     device: torch.device, repeats: int,
                     warmup: int = 1) -> Dict[str, Dict[str, List[float]]]:
    """Seconds of each callable, ``repeats`` times each, as
    ``{name: {'wall': [...], 'cpu': [...]}}``.

    Repeats are interleaved (A, B, C, A, B, C, ...) so that load from other
    processes affects all implementations alike. ``cpu`` is the process's
    CPU time (all threads): unlike wall-clock time it does not grow while
    other processes hold the cores, so on a shared machine it is the
    steadier measure of work (on CUDA it only measures the host side).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            synchronize(device)
    times = {name: dict(wall=[], cpu=[]) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            synchronize(device)
            times[name]['wall'].append(time.perf_counter() - wall)
            times[name]['cpu'].append(time.process_time() - cpu)
    return times


def summarize(times: Dict[str, Sequence[float]]) -> Dict[str, float]:
    """Median, min and spread ((max - min) / median) of the wall-clock
    repeats, and the median CPU time."""
    wall = times['wall']
    med = statistics.median(wall)
    return dict(median_s=med, min_s=min(wall),
                spread=(max(wall) - min(wall)) / med if med else 0.0,
                cpu_median_s=statistics.median(times['cpu']),
                runs=len(wall))


def peak_memory_bytes(fn: Callable[[], object],
                      device: torch.device) -> int:
    """Peak bytes of live tensors allocated while ``fn`` runs, above those
    alive when it starts.

    CUDA: the caching allocator's peak statistics. CPU: the profiler's
    allocation events (every tensor allocation and free in order), so the
    number means the same thing as on CUDA: tensor memory, not process RSS.
    """
    if device.type == 'cuda':
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    # Kineto's instant '[memory]' events: every allocation (+bytes) and
    # free (-bytes) with its time (the op-level summaries nest and would
    # count allocations twice).
    events = sorted((e.start_ns(), e.nbytes())
                    for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]')
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def format_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-markdown table; floats printed with 3 significant digits."""

    def cell(value) -> str:
        if isinstance(value, float):
            return f'{value:.3g}'
        return '-' if value is None else str(value)

    lines = ['| ' + ' | '.join(headers) + ' |',
             '|' + '|'.join('---' for _ in headers) + '|']
    lines += ['| ' + ' | '.join(cell(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def write_json(name: str, payload: dict, path: Optional[str] = None) -> str:
    """Write ``payload`` to ``path`` or ``benchmarks/results/NAME.json``."""
    path = path or os.path.join(RESULTS_DIR, f'{name}.json')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = dict(payload, written=time.strftime('%Y-%m-%d %H:%M:%S'))
    with open(path, 'w') as f:
        json.dump(payload, f, indent=2)
    return path


def parse_size(text: str) -> tuple:
    """``'1x3x800x1344'`` -> ``(1, 3, 800, 1344)``."""
    try:
        size = tuple(int(v) for v in text.lower().split('x'))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1:
        raise argparse.ArgumentTypeError(
            f'size must look like BxCxHxW, e.g. 1x3x800x1344, got {text!r}')
    return size


def size_name(size: Sequence[int]) -> str:
    """``(1, 3, 800, 1344)`` -> ``'1x3x800x1344'``."""
    return 'x'.join(str(v) for v in size)
