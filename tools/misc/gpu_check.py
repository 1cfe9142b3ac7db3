"""``make gpu-check``: mmswin's CUDA checks in one command, one summary.

    python tools/misc/gpu_check.py [--out work_dirs/gpu_check] [--no-bench]

1. The tests that take the ``device`` fixture, on CUDA
   (``pytest tests --device cuda``): parity with mmdet's and mmseg's
   backbones and their gradients, fp16 and bf16 autocast under stress, and
   whatever else is device-capable (export, ...).
2. ``benchmarks/run_all.py --device cuda --quick``.
3. ``OUT/summary.md``: the GPU and versions, each step's result and time,
   the failed tests and the benchmark tables.

Under 10 minutes on one GPU (each step has a time limit). Without a CUDA
device it says so, writes the summary and exits 0; otherwise the exit
status is 1 if any step failed.
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from typing import List, NamedTuple, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TESTS_TIME_LIMIT_S = 420
BENCH_TIME_LIMIT_S = 150


class Step(NamedTuple):
    """One check: its name, whether it passed, seconds, Markdown details."""
    name: str
    passed: bool
    seconds: float
    details: str


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='work_dirs/gpu_check',
                        help='folder of summary.md and the logs')
    parser.add_argument('--no-bench', action='store_true',
                        help='only the tests')
    return parser.parse_args(argv)


def run_logged(argv: List[str], log_path: str,
               limit_s: float) -> Tuple[Optional[int], float]:
    """Run ``argv`` from the repo root into ``log_path``: (exit status or
    None if it ran past ``limit_s``, seconds)."""
    start = time.time()
    with open(log_path, 'w') as log:
        try:
            code = subprocess.run(argv, cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  timeout=limit_s).returncode
        except subprocess.TimeoutExpired:
            code = None
    return code, time.time() - start


def run_tests(out: str) -> Step:
    junit = osp.join(out, 'tests.xml')
    code, seconds = run_logged(
        [sys.executable, '-m', 'pytest', 'tests', '--device', 'cuda', '-q',
         '-rfEs', f'--junitxml={junit}'], osp.join(out, 'tests.log'),
        TESTS_TIME_LIMIT_S)
    if code is None:
        return Step('tests on CUDA', False, seconds,
                    f'ran past {TESTS_TIME_LIMIT_S} s; see tests.log')
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
    counts = {k: int(suite.get(k, 0))
              for k in ('tests', 'failures', 'errors', 'skipped')}
    failed = [f"{case.get('classname')}::{case.get('name')}"
              for case in suite.iter('testcase')
              if case.find('failure') is not None
              or case.find('error') is not None]
    lines = [', '.join(f'{v} {k}' for k, v in counts.items())]
    lines += [f'- failed: `{name}`' for name in failed]
    passed = code == 0 and counts['tests'] > counts['skipped']
    return Step('tests on CUDA', passed, seconds, '\n'.join(lines))


def run_benchmarks(out: str) -> Step:
    code, seconds = run_logged(
        [sys.executable, 'benchmarks/run_all.py', '--device', 'cuda',
         '--quick'], osp.join(out, 'bench.log'), BENCH_TIME_LIMIT_S)
    tables = osp.join(ROOT, 'benchmarks', 'results', 'summary.md')
    details = f'ran past {BENCH_TIME_LIMIT_S} s; ' if code is None else ''
    if code == 0 and osp.isfile(tables):
        with open(tables) as f:
            details += f.read()
    else:
        details += 'see bench.log'
    return Step('benchmarks/run_all.py --device cuda --quick', code == 0,
                seconds, details)


def write_summary(out: str, machine: str, steps: List[Step]) -> str:
    lines = ['# make gpu-check', '', machine, '']
    for step in steps:
        verdict = 'passed' if step.passed else 'FAILED'
        lines += [f'## {step.name}: {verdict} ({step.seconds:.0f} s)', '',
                  step.details, '']
    path = osp.join(out, 'summary.md')
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return path


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = osp.join(ROOT, args.out) if not osp.isabs(args.out) else args.out
    os.makedirs(out, exist_ok=True)
    import torch
    if not torch.cuda.is_available():
        reason = (f'skipped: no CUDA device ({sys.executable}: torch '
                  f'{torch.__version__}, CUDA build {torch.version.cuda}). '
                  'Run it in an environment with CUDA torch, or name one: '
                  'make gpu-check GPU_PYTHON=/path/to/python')
        path = write_summary(out, reason, [])
        print(f'make gpu-check {reason}\nwrote {path}')
        return 0
    machine = (f'{torch.cuda.get_device_name(0)}, torch {torch.__version__},'
               f' CUDA {torch.version.cuda}, {time.strftime("%Y-%m-%d")}')
    print(f'gpu-check on {machine}', flush=True)
    steps = [run_tests(out)]
    if not args.no_bench:
        steps.append(run_benchmarks(out))
    path = write_summary(out, machine, steps)
    for step in steps:
        print(f"{step.name}: {'passed' if step.passed else 'FAILED'} "
              f'({step.seconds:.0f} s)')
    print(f'wrote {path}')
    return 0 if all(step.passed for step in steps) else 1


if __name__ == '__main__':
    sys.exit(main())
