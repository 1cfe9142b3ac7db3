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
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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
    parser.add_argument('--runs', type=int, default=1,
                        help='repeat the whole measurement in this many '
                        'fresh processes and report the median and min-max '
                        'over them (use >= 3 for published numbers)')
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads`` and check ``--device``; returns the device."""
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit(f'--device {args.device}: torch.cuda.is_available() '
                         'is False on this machine; use --device cpu')
    if args.repeats < 1 or args.warmup < 0 or args.runs < 1:
        raise SystemExit('--repeats and --runs must be >= 1 and --warmup '
                         '>= 0')
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
        load_1min=round(os.getloadavg()[0], 2),
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


def matmul_fn(device: torch.device, side: int):
    """A ``side``-cubed matmul (the practical peak) and its FLOPs."""
    a = torch.randn(side, side, device=device)
    b = torch.randn(side, side, device=device)
    return (lambda: torch.mm(a, b)), 2 * side**3


def add_matmul_arg(parser: argparse.ArgumentParser) -> None:
    """``--matmul-size``: the reference matmul of
    :func:`time_with_matmul`."""
    parser.add_argument('--matmul-size', type=int, default=4096,
                        help='side of the reference matmul timed alongside '
                        '(0: none)')


def time_with_matmul(fns: Dict[str, Callable[[], object]],
                     device: torch.device, args: argparse.Namespace
                     ) -> Tuple[Dict[str, Dict[str, List[float]]],
                                Optional[Tuple[str, int]]]:
    """:func:`time_interleaved` of ``fns`` and, unless ``--matmul-size``
    is 0, a ``side``-cubed matmul in the same repeats (its GFLOP/s is the
    machine's speed at the time). Returns the times and the matmul's
    ``(label, FLOPs)``, or None without it."""
    timed, matmul = dict(fns), None
    if args.matmul_size:
        fn, flops = matmul_fn(device, args.matmul_size)
        matmul = (f'matmul {args.matmul_size}^3', flops)
        timed[matmul[0]] = fn
    return time_interleaved(timed, device, args.repeats, args.warmup), matmul


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


# Above this spread ((max - min) / median) of its own samples, the matmul
# rate says the host's speed changed during the run.
MATMUL_SPREAD_LIMIT = 0.15


def busy_warnings(loads: Sequence[float], matmul_spreads: Sequence[float],
                  cpu_count: Optional[int] = None) -> List[str]:
    """Why the timings of a run are not to be published, if they are not:
    a 1-minute load average above the core count, or a reference matmul
    whose timed samples spread by more than ``MATMUL_SPREAD_LIMIT``."""
    cores = cpu_count or os.cpu_count() or 1
    found = []
    if loads and max(loads) > cores:
        found.append(f'busy machine: 1-minute load average up to '
                     f'{max(loads):.2f} on {cores} cores')
    if matmul_spreads and max(matmul_spreads) > MATMUL_SPREAD_LIMIT:
        found.append(f'unstable host speed: the reference matmul\'s samples '
                     f'spread by {max(matmul_spreads):.0%} (limit '
                     f'{MATMUL_SPREAD_LIMIT:.0%})')
    return found


# The row field that names what was timed, per benchmark ('impl' by
# default); a reference matmul's row has a label starting with 'matmul'.
LABEL_FIELDS = ('impl', 'config', 'path')


def is_matmul(row: dict) -> bool:
    """Whether ``row`` is the reference matmul timed alongside the models."""
    return any(str(row.get(field, '')).startswith('matmul')
               for field in LABEL_FIELDS)


def run_in_processes(script: str, argv: Sequence[str], runs: int,
                     variants: Sequence[Dict[str, Optional[str]]] = ({},)
                     ) -> List[dict]:
    """Run ``script ARGV --runs 1`` ``runs`` times for each environment of
    ``variants`` (variables to set; ``None`` unsets one), each in a fresh
    process (its own allocator, caches and thread pool: part of what moves
    a number from one run to the next), and return their JSON payloads.
    The variants alternate within each run, so a slow minute hits them
    alike."""
    payloads = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            for index, variant in enumerate(variants):
                out = os.path.join(tmp, f'run{run}_{index}.json')
                cmd = [sys.executable, script, *argv, '--runs', '1',
                       '--out', out]
                env = {k: v for k, v in os.environ.items()
                       if variant.get(k, v) is not None}
                env.update({k: v for k, v in variant.items()
                            if v is not None})
                shown = ' '.join([*(f'{k}={v}' for k, v in variant.items()
                                    if v is not None), *cmd])
                print(f'run {run + 1}/{runs}:', shown, file=sys.stderr,
                      flush=True)
                done = subprocess.run(cmd, stdout=subprocess.DEVNULL, env=env)
                if done.returncode:
                    raise SystemExit(f'run {run + 1}/{runs} failed (exit '
                                     f'status {done.returncode}; its error '
                                     f'is above): {shown}')
                with open(out) as f:
                    payloads.append(json.load(f))
    return payloads


def strip_options(argv: Sequence[str],
                  options: Sequence[str] = ('--runs', '--out')) -> List[str]:
    """``argv`` without ``options`` and their values (every word up to the
    next option)."""
    kept, skipping = [], False
    for word in argv:
        if word.startswith('-'):
            skipping = word in options
            if skipping or word.split('=', 1)[0] in options:
                continue
        if not skipping:
            kept.append(word)
    return kept


def spread_over_runs(payloads: Sequence[dict], ratios: Sequence[str],
                     keys: Sequence[str] = ('size', 'dtype', 'impl')
                     ) -> Tuple[List[dict], str]:
    """One row per ``keys`` (the last names what was timed) with the median
    and min-max over the runs of its median seconds and of each ``ratios``
    field, and the GFLOP/s of the reference matmul timed with it (same
    ``keys[:-1]``) in the same runs; plus the Markdown table."""
    groups: Dict[tuple, List[dict]] = {}
    for payload in payloads:
        for row in payload['rows']:
            groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    gflops = {key[:-1]: [r['gflops_per_s'] for r in rows]
              for key, rows in groups.items() if is_matmul(rows[0])}
    out = []
    for key, rows in groups.items():
        row = dict(zip(keys, key), runs=len(rows),
                   median_s=_range([r['median_s'] for r in rows]),
                   matmul_gflops=_range(gflops.get(key[:-1], [])))
        for name in ratios:
            row[name] = _range([r[name] for r in rows
                                if r.get(name) is not None])
        out.append(row)

    def cell(stats: Optional[dict], digits: str = '.3g') -> str:
        if not stats:
            return '-'
        return (f"{stats['median']:{digits}} ({stats['min']:{digits}}-"
                f"{stats['max']:{digits}})")

    table = format_table(
        [*keys, 'runs', 'median s (min-max)',
         *[f'{name} (min-max)' for name in ratios],
         'matmul GFLOP/s (min-max)'],
        [(*(r[k] for k in keys), r['runs'], cell(r['median_s']),
          *[cell(r[name]) for name in ratios],
          cell(r['matmul_gflops'], '.0f')) for r in out])
    return out, table


def _range(values: Sequence[float]) -> Optional[dict]:
    if not values:
        return None
    return dict(median=statistics.median(values), min=min(values),
                max=max(values))


def report_runs(name: str, script: str, argv: Optional[Sequence[str]],
                args: argparse.Namespace, ratios: Sequence[str],
                keys: Sequence[str] = ('size', 'dtype', 'impl'),
                variants: Sequence[Dict[str, Optional[str]]] = ({},),
                strip: Sequence[str] = ()) -> dict:
    """``--runs N`` of a benchmark: N fresh processes (per environment of
    ``variants``), the spread table (see ``spread_over_runs``), busy-machine
    warnings, and ``benchmarks/results/NAME.json``. ``argv`` (default
    ``sys.argv[1:]``) is passed on without ``--runs``, ``--out`` and the
    options in ``strip``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    payloads = run_in_processes(
        script, strip_options(argv, ('--runs', '--out', *strip)), args.runs,
        variants)
    rows, table = spread_over_runs(payloads, ratios, keys)
    warnings = busy_warnings(
        [p['machine'].get('load_1min', 0.0) for p in payloads],
        [r['spread'] for p in payloads for r in p['rows'] if is_matmul(r)])
    command = ' '.join(['python', os.path.relpath(script), *argv])
    table = f'Command: `{command}`\n\n' + table
    for warning in warnings:
        table += f'\n\nWARNING: {warning}'
    print(table)
    payload = dict(benchmark=name, machine=payloads[0]['machine'],
                   args=vars(args), rows=rows, runs=payloads, table=table,
                   warnings=warnings)
    print('wrote', write_json(name, payload, args.out))
    return payload
