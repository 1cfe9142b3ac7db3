"""Run every benchmark in turn (``make bench``) and write a summary.

    python benchmarks/run_all.py [--device cuda] [--dtype all] [--quick]
        [--runs N]

Each benchmark writes its own JSON under ``benchmarks/results/``; this
script adds ``summary.md`` there with every table and the machine, the
Markdown that docs/en/advanced_guides/performance.md quotes; a busy machine
(load above the core count, an unstable matmul rate) gets a warning on
stderr and atop the summary. ``--runs N`` (default 3, 1 with
``--quick``) runs each benchmark N times in fresh processes and reports
the median and min-max over them. ``--quick`` runs small sizes with two
repeats, to check that everything works.
"""
import argparse
import json
import os
import subprocess
import sys
import time

from common import RESULTS_DIR, busy_warnings, is_matmul

HERE = os.path.dirname(os.path.abspath(__file__))
QUICK = {
    'backbone_latency.py': ['--sizes', '1x3x224x320', '--repeats', '2'],
    'train_step.py': ['--sizes', '1x3x224x320', '--repeats', '2'],
    'flops_efficiency.py': ['--sizes', '1x3x224x320', '--repeats', '2',
                            '--matmul-size', '1024'],
    'whole_model.py': ['--repeats', '1'],
    'compiled.py': ['--sizes', '1x3x224x320', '--repeats', '2'],
    'deploy_latency.py': ['--quick'],
}
ORDER = ['backbone_latency.py', 'train_step.py', 'flops_efficiency.py',
         'whole_model.py', 'compiled.py', 'deploy_latency.py']


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', default='2')
    parser.add_argument('--dtype', default=None,
                        help="default: 'all' on CUDA (fp32 and bf16), "
                        "'fp32' on CPU")
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--runs', type=int, default=None,
                        help='fresh processes per benchmark (default 3; '
                        '1 with --quick)')
    parser.add_argument('--only', nargs='+', choices=ORDER, default=ORDER)
    args = parser.parse_args(argv)
    dtype = args.dtype or ('all' if args.device.startswith('cuda')
                           else 'fp32')
    runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if runs < 1:
        raise SystemExit(f'--runs must be >= 1, got {runs}')
    common = ['--device', args.device, '--threads', args.threads,
              '--dtype', dtype, '--runs', str(runs)]
    os.makedirs(RESULTS_DIR, exist_ok=True)
    command = ' '.join(['python benchmarks/run_all.py', *(argv or
                                                           sys.argv[1:])])
    sections = [f'Command: `{command}`', '']
    failed = []
    # Busy-machine evidence: the load before each benchmark and the
    # reference matmul's spread within each (see common.busy_warnings).
    loads, matmul_spreads = [os.getloadavg()[0]], []
    for script in args.only:
        extra = QUICK[script] if args.quick else []
        out = os.path.join(RESULTS_DIR, script.replace('.py', '.json'))
        cmd = [sys.executable, os.path.join(HERE, script), *common, *extra,
               '--out', out]
        print('$', ' '.join(cmd), flush=True)
        start = time.time()
        result = subprocess.run(cmd, capture_output=True, text=True)
        print(result.stdout[-4000:], flush=True)
        if result.returncode:
            print(result.stderr[-4000:], file=sys.stderr)
            failed.append(script)
            continue
        with open(out) as f:
            payload = json.load(f)
        for run in payload.get('runs', [payload]):  # each process
            loads.append(run['machine'].get('load_1min', 0.0))
            matmul_spreads += [r['spread'] for r in run['rows']
                               if is_matmul(r) and 'spread' in r]
        if len(sections) == 2:
            sections[1:1] = [f"Machine: {payload['machine']}", '']
        sections += [f'### {script} ({time.time() - start:.0f} s)', '',
                     payload['table'], '']
    warnings = busy_warnings(loads, matmul_spreads)
    for warning in warnings:  # the tables are written all the same
        print(f'WARNING: {warning}: do not publish these timings; rerun '
              'when the machine is quiet', file=sys.stderr)
    sections[1:1] = [f'WARNING: {w}' for w in warnings] + (
        [''] if warnings else [])
    with open(os.path.join(RESULTS_DIR, 'summary.md'), 'w') as f:
        f.write('\n'.join(sections))
    print('wrote', os.path.join(RESULTS_DIR, 'summary.md'))
    if failed:
        print('failed:', ', '.join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
