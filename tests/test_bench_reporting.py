"""How the benchmarks report: the spread over ``--runs`` fresh processes
with the matmul rate beside it, and the busy-machine warning of
``make bench`` (benchmarks/common.py, benchmarks/run_all.py). Stand-in
benchmarks write fixed payloads, so nothing here times anything.
"""
import json
import os
import os.path as osp
import sys
import textwrap

import pytest
from helpers import ROOT

sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
import common  # noqa: E402
import run_all  # noqa: E402


def payload(mmswin_s: float, mmdet_s: float, matmul_s: float,
            matmul_spread: float = 0.01, load: float = 0.5) -> dict:
    """What one benchmark process writes, for one size."""
    def row(impl, seconds, **extra):
        return dict(size='1x3x8x8', dtype='fp32', impl=impl,
                    median_s=seconds, spread=0.01, **extra)
    return dict(machine=dict(load_1min=load), rows=[
        row('mmswin', mmswin_s, speedup_vs_mmdet=mmdet_s / mmswin_s),
        row('mmdet', mmdet_s, speedup_vs_mmdet=1.0),
        dict(row('matmul 8^3', matmul_s, speedup_vs_mmdet=None,
                 gflops_per_s=1.0 / matmul_s), spread=matmul_spread)])


def test_spread_over_runs_gives_median_and_range():
    runs = [payload(1.0, 1.5, 0.5), payload(1.2, 1.5, 1.0),
            payload(1.1, 2.2, 0.25)]
    rows, table = common.spread_over_runs(runs, ['speedup_vs_mmdet'])
    by_impl = {r['impl']: r for r in rows}
    assert by_impl['mmswin']['median_s'] == dict(median=1.1, min=1.0,
                                                 max=1.2)
    ratio = by_impl['mmswin']['speedup_vs_mmdet']
    assert (ratio['min'], ratio['max']) == (1.25, 2.2 / 1.1)
    assert ratio['median'] == 1.5
    assert by_impl['mmswin']['matmul_gflops'] == dict(median=2.0, min=1.0,
                                                      max=4.0)
    assert '| 1x3x8x8 | fp32 | mmswin | 3 | 1.1 (1-1.2) | 1.5 (1.25-2) ' \
        '| 2 (1-4) |' in table


@pytest.mark.parametrize('loads, spreads, expected', [
    ([0.5, 1.9], [0.05, 0.1], []),
    ([0.5, 2.7], [0.05], ['busy machine: 1-minute load average up to 2.70 '
                          'on 2 cores']),
    ([0.5], [0.05, 0.4], ["unstable host speed: the reference matmul's "
                          'samples spread by 40% (limit 15%)']),
])
def test_busy_warnings(loads, spreads, expected):
    assert common.busy_warnings(loads, spreads, cpu_count=2) == expected


def test_strip_runs_keeps_the_other_arguments():
    assert common.strip_runs(['--sizes', '1x3x8x8', '--runs', '3',
                              '--out=x.json', '--repeats', '2']) == [
        '--sizes', '1x3x8x8', '--repeats', '2']


def test_runs_report_spread_and_warning(tmp_path):
    """``--runs 3`` of a stand-in benchmark: three fresh processes, each
    with its own arguments, one table, and the warning its matmul asks
    for."""
    for run in range(3):
        (tmp_path / f'payload{run}.json').write_text(json.dumps(payload(
            1.0 + run / 10, 1.5, 0.5,
            matmul_spread=0.3 if run == 2 else 0.01)))
    script = tmp_path / 'fake_bench.py'
    script.write_text(textwrap.dedent(f'''
        import os, shutil, sys
        argv = sys.argv[1:]
        assert argv[argv.index('--runs') + 1] == '1', argv
        assert argv[:2] == ['--sizes', '1x3x8x8'], argv
        out = argv[argv.index('--out') + 1]
        run = len(os.listdir(os.path.dirname(out)))
        shutil.copy(os.path.join({str(tmp_path)!r}, f'payload{{run}}.json'),
                    out)
    '''))
    args = common.add_common_args(
        __import__('argparse').ArgumentParser()).parse_args(
            ['--runs', '3', '--out', str(tmp_path / 'out.json')])
    result = common.report_runs('fake', str(script),
                                ['--runs', '3', '--sizes', '1x3x8x8'],
                                args, ['speedup_vs_mmdet'])
    assert len(result['runs']) == 3
    mmswin = next(r for r in result['rows'] if r['impl'] == 'mmswin')
    assert mmswin['median_s'] == dict(median=1.1, min=1.0, max=1.2)
    assert result['warnings'] == ["unstable host speed: the reference "
                                  "matmul's samples spread by 30% (limit "
                                  "15%)"]
    with open(tmp_path / 'out.json') as f:
        assert 'WARNING: unstable host speed' in json.load(f)['table']


@pytest.mark.parametrize('busy', [False, True])
def test_make_bench_warns_on_a_busy_machine(busy, tmp_path, monkeypatch,
                                            capsys):
    """run_all.py (``make bench``) writes its tables either way; a load
    above the core count puts a warning on stderr and atop summary.md."""
    def fake_run(cmd, **kwargs):
        out = cmd[cmd.index('--out') + 1]
        with open(out, 'w') as f:
            json.dump(dict(payload(1.0, 1.5, 0.5), table='| the table |'),
                      f)
        return type('Done', (), dict(returncode=0, stdout='', stderr=''))

    monkeypatch.setattr(run_all.subprocess, 'run', fake_run)
    monkeypatch.setattr(run_all, 'RESULTS_DIR', str(tmp_path))
    cores = os.cpu_count() or 1
    monkeypatch.setattr(run_all.os, 'getloadavg',
                        lambda: (cores + 1.0 if busy else 0.1, 0.0, 0.0))
    assert run_all.main(['--only', 'backbone_latency.py']) == 0
    summary = (tmp_path / 'summary.md').read_text()
    assert '| the table |' in summary
    assert ('WARNING: busy machine' in summary) == busy
    assert ('do not publish these timings' in capsys.readouterr().err) \
        == busy
