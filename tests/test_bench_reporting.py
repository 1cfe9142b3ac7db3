"""How the benchmarks report: the spread over ``--runs`` fresh processes
with the matmul rate beside it, and the busy-machine warning of
``make bench`` (benchmarks/common.py, benchmarks/run_all.py). Stand-in
benchmarks write fixed payloads, so nothing here times anything.
"""
import importlib
import json
import os
import os.path as osp
import subprocess
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


def test_strip_options_keeps_the_other_arguments():
    assert common.strip_options(['--sizes', '1x3x8x8', '--runs', '3',
                                 '--out=x.json', '--repeats', '2']) == [
        '--sizes', '1x3x8x8', '--repeats', '2']
    # A many-valued option goes with all its values, up to the next option.
    assert common.strip_options(
        ['--allocators', 'glibc', 'tcmalloc', '--quick', '--runs', '3',
         '--paths', 'A', 'B'], ('--runs', '--allocators')) == [
        '--quick', '--paths', 'A', 'B']


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


@pytest.mark.parametrize('argv, runs', [
    ([], '3'), (['--quick'], '1'), (['--quick', '--runs', '5'], '5')])
def test_make_bench_passes_runs_on(argv, runs, tmp_path, monkeypatch):
    """``make bench`` gives every benchmark ``--runs`` (3 by default, 1 with
    --quick), and a busy run among a benchmark's runs warns."""
    cmds = []

    def fake_run(cmd, **kwargs):
        cmds.append(cmd)
        out = cmd[cmd.index('--out') + 1]
        runs = [payload(1.0, 1.5, 0.5, load=load) for load in (0.1, 99.0)]
        with open(out, 'w') as f:
            json.dump(dict(payload(1.0, 1.5, 0.5, load=0.1), runs=runs,
                           table='| t |'), f)
        return type('Done', (), dict(returncode=0, stdout='', stderr=''))

    monkeypatch.setattr(run_all.subprocess, 'run', fake_run)
    monkeypatch.setattr(run_all, 'RESULTS_DIR', str(tmp_path))
    monkeypatch.setattr(run_all.os, 'getloadavg', lambda: (0.1, 0.0, 0.0))
    assert run_all.main([*argv, '--only', 'train_step.py',
                         'whole_model.py']) == 0
    assert [cmd[cmd.index('--runs') + 1] for cmd in cmds] == [runs] * 2
    assert 'WARNING: busy machine: 1-minute load average up to 99.00' in \
        (tmp_path / 'summary.md').read_text()


def test_spread_over_runs_by_other_keys():
    """whole_model.py's rows go by (model, dtype, config): each model gets
    the matmul timed with it, not another model's."""
    def run(seconds, matmul_s):
        return dict(machine={}, rows=[
            dict(model=model, dtype='fp32', config=config, median_s=t,
                 speedup=1.0, gflops_per_s=gflops)
            for model, scale in (('det', 1), ('seg', 2))
            for config, t, gflops in (
                ('mmswin config', seconds * scale, None),
                (f'matmul 8^3 {model}', matmul_s, scale / matmul_s))])
    rows, table = common.spread_over_runs(
        [run(1.0, 0.5), run(3.0, 1.0)], ['speedup'],
        keys=('model', 'dtype', 'config'))
    seg = next(r for r in rows if r['model'] == 'seg'
               and r['config'] == 'mmswin config')
    assert seg['median_s'] == dict(median=4.0, min=2.0, max=6.0)
    assert seg['matmul_gflops'] == dict(median=3.0, min=2.0, max=4.0)
    assert table.startswith('| model | dtype | config | runs |')
    assert '| seg | fp32 | mmswin config | 2 | 4 (2-6) | 1 (1-1) | 3 (2-4) |' \
        in table


def test_run_in_processes_sets_each_variants_environment(tmp_path,
                                                         monkeypatch):
    """Each run starts one fresh process per variant, in turn, with the
    variant's variables set (None: unset)."""
    monkeypatch.setenv('BENCH_GONE', 'inherited')
    script = tmp_path / 'env_bench.py'
    script.write_text(textwrap.dedent('''
        import json, os, sys
        out = sys.argv[sys.argv.index('--out') + 1]
        json.dump(dict(pid=os.getpid(), tag=os.environ.get('BENCH_TAG'),
                       gone=os.environ.get('BENCH_GONE')), open(out, 'w'))
    '''))
    payloads = common.run_in_processes(
        str(script), [], 2, [dict(BENCH_TAG='a', BENCH_GONE=None),
                             dict(BENCH_TAG='b')])
    assert [(p['tag'], p['gone']) for p in payloads] == [
        ('a', None), ('b', 'inherited')] * 2
    assert len({p['pid'] for p in payloads}) == 4


def in_process_runs(monkeypatch, calls: list):
    """Replace ``common.run_in_processes`` by runs of the script's own
    ``main`` in this process (with each variant's environment), so a test
    sees the rows each benchmark really writes without starting Python
    again; ``calls`` gets each call's argv and variants."""
    def fake(script, argv, runs, variants=({},)):
        calls.append((list(argv), list(variants)))
        module = importlib.import_module(osp.basename(script)[:-3])
        payloads = []
        for run in range(runs):
            for variant in variants:
                with monkeypatch.context() as m:
                    for key, value in variant.items():
                        if value is None:
                            m.delenv(key, raising=False)
                        else:
                            m.setenv(key, value)
                    out = osp.join(os.environ['BENCH_TMP'], f'{run}.json')
                    module.main([*argv, '--runs', '1', '--out', out])
                with open(out) as f:
                    payloads.append(json.load(f))
        return payloads

    monkeypatch.setattr(common, 'run_in_processes', fake)


TINY = ['--repeats', '1', '--warmup', '0', '--threads', '1',
        '--matmul-size', '32']


@pytest.mark.parametrize('script, argv, keys, ratio', [
    ('train_step', ['--sizes', '1x3x32x32', '--impls', 'mmdet'],
     ('size', 'dtype', 'impl'), 'memory_vs_mmdet'),
    ('flops_efficiency', ['--sizes', '1x3x32x32'],
     ('size', 'dtype', 'impl'), 'fraction_of_matmul'),
    ('whole_model', ['--models', 'UperNet Swin-T, 512x512'],
     ('model', 'dtype', 'config'), 'speedup'),
])
def test_runs_of_each_benchmark(script, argv, keys, ratio, tmp_path,
                                 monkeypatch):
    """``--runs 2``: two runs of the benchmark's own measurement, one row
    per (keys) with the median and min-max over them, its ratio, and the
    GFLOP/s of the matmul timed in the same runs."""
    module = importlib.import_module(script)
    if script == 'whole_model':  # a small image keeps UperNet fast
        pair = dict(module.PAIRS['UperNet Swin-T, 512x512'], image=(64, 64))
        monkeypatch.setitem(module.PAIRS, 'UperNet Swin-T, 512x512', pair)
    monkeypatch.setenv('BENCH_TMP', str(tmp_path))
    calls = []
    in_process_runs(monkeypatch, calls)
    out = tmp_path / 'out.json'
    result = module.main([*argv, *TINY, '--runs', '2', '--out', str(out)])
    assert len(calls) == 1 and '--runs' not in calls[0][0]
    assert len(result['runs']) == 2
    rows = [r for r in result['rows'] if not common.is_matmul(r)]
    assert len(rows) >= 2 and all(r['runs'] == 2 for r in rows)
    for row in rows:
        assert set(keys) <= set(row)
        spread = row['median_s']
        assert 0 < spread['min'] <= spread['median'] <= spread['max']
        assert row['matmul_gflops']['min'] > 0
        assert row[ratio]['min'] > 0
    assert json.loads(out.read_text())['table'] == result['table']


def stub_deploy_latency(monkeypatch, record):
    """deploy_latency on an 8x8 detector input with stand-in runtimes:
    nothing exported; ``paths`` calls ``record(wanted)`` and returns
    functions that sum the images."""
    import deploy_latency
    monkeypatch.setitem(deploy_latency.MODELS, 'det', dict(
        deploy_latency.MODELS['det'], size=(8, 8)))
    monkeypatch.setattr(deploy_latency, 'prepare', lambda key, cache: (
        None, None))

    def fake_paths(wrapper, files, threads, wanted):
        record(list(wanted))
        return {label: (lambda images: images.sum()) for label in wanted}

    monkeypatch.setattr(deploy_latency, 'paths', fake_paths)
    return deploy_latency


def test_deploy_latency_allocators_side_by_side(tmp_path, monkeypatch):
    """``--allocators glibc tcmalloc --runs 2``: each run one process per
    allocator, with the library in LD_PRELOAD and TBB_ENABLE_SANITIZERS
    (glibc: no LD_PRELOAD), every row labelled with its allocator, and one
    table with the allocators side by side. The runtimes are stand-ins."""
    seen = []
    deploy_latency = stub_deploy_latency(monkeypatch, lambda wanted: (
        seen.append((os.environ.get('LD_PRELOAD'),
                     os.environ.get('TBB_ENABLE_SANITIZERS'), wanted))))
    lib = tmp_path / 'libtcmalloc_minimal.so.4'
    lib.write_text('')
    monkeypatch.setattr(deploy_latency, 'LIB_DIRS', (str(tmp_path), ))
    monkeypatch.setenv('BENCH_TMP', str(tmp_path))
    monkeypatch.delenv('LD_PRELOAD', raising=False)
    monkeypatch.delenv('TBB_ENABLE_SANITIZERS', raising=False)
    in_process_runs(monkeypatch, [])
    result = deploy_latency.main(
        ['--models', 'det', '--quick', '--paths', 'OpenVINO int8', *TINY,
         '--allocators', 'glibc', 'tcmalloc', '--runs', '2',
         '--out', str(tmp_path / 'out.json')])
    wanted = ['PyTorch eager fp32', 'OpenVINO int8']
    assert seen == [(None, None, wanted), (str(lib), '1', wanted)] * 2
    labels = {(r['allocator'], r['path']) for r in result['rows']
              if not common.is_matmul(r)}
    assert labels == {(a, p) for a in ('glibc', 'tcmalloc') for p in wanted}
    assert result['side_by_side'].startswith(
        '| model | input | path | glibc s (min-max) | tcmalloc s (min-max) '
        '| tcmalloc speed-up vs glibc |')
    assert '| Swin-T + FPN | 1x3x8x8 | OpenVINO int8 | ' in \
        result['side_by_side']
    assert result['side_by_side'] in result['table']


def test_deploy_latency_under_a_preloaded_allocator_sets_the_tbb_switch(
        tmp_path, monkeypatch):
    """Run plainly under ``LD_PRELOAD`` (one process), deploy_latency.py
    sets TBB_ENABLE_SANITIZERS before any runtime starts, and labels its
    rows with the allocator."""
    seen = []
    deploy_latency = stub_deploy_latency(monkeypatch, lambda wanted: (
        seen.append(os.environ.get('TBB_ENABLE_SANITIZERS'))))
    monkeypatch.setenv('LD_PRELOAD', '/somewhere/libjemalloc.so.2')
    # set, then unset: monkeypatch restores what main() sets
    monkeypatch.setenv('TBB_ENABLE_SANITIZERS', '0')
    monkeypatch.delenv('TBB_ENABLE_SANITIZERS')
    result = deploy_latency.main(['--models', 'det', '--quick', *TINY,
                                  '--out', str(tmp_path / 'out.json')])
    assert seen == ['1']
    assert {r['allocator'] for r in result['rows']} == {'jemalloc'}


def test_deploy_latency_names_a_missing_allocator(monkeypatch, tmp_path):
    import deploy_latency
    monkeypatch.setattr(deploy_latency, 'LIB_DIRS', (str(tmp_path), ))
    with pytest.raises(SystemExit, match='--allocators jemalloc: none of '
                       'libjemalloc.so.2 in .*apt-get install libjemalloc2'):
        deploy_latency.allocator_env('jemalloc')


OPENVINO_COMPILE = '''
import numpy as np
import openvino as ov
from openvino import opset13 as ops
p = ops.parameter([2, 3], np.float32)
model = ov.Model([ops.relu(p)], [p])
print(ov.Core().compile_model(model, 'CPU')(np.ones((2, 3), np.float32))[0]
      .sum())
'''


def test_openvino_runs_with_tcmalloc_preloaded():
    """The allocator fix: with tcmalloc in LD_PRELOAD, OpenVINO's first
    compile loads TBB's hwloc with RTLD_DEEPBIND, so hwloc frees memory
    that tcmalloc allocated with glibc's free (SIGSEGV or 'free(): invalid
    size'); TBB_ENABLE_SANITIZERS=1, as deploy_latency.allocator_env sets
    it, drops RTLD_DEEPBIND and the compile runs."""
    pytest.importorskip('openvino')
    import deploy_latency
    try:
        env = deploy_latency.allocator_env('tcmalloc')
    except SystemExit:
        pytest.skip('libtcmalloc-minimal4 is not installed')
    done = subprocess.run([sys.executable, '-c', OPENVINO_COMPILE],
                          env=dict(os.environ, **env), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == '6.0'


FAKE_PYTHON = '''#!/usr/bin/env python3
import json, os, sys
argv = sys.argv[1:]
with open(os.environ['CALLS'], 'a') as f:
    f.write(json.dumps(argv) + '\\n')
if os.environ.get('WRITE_JSON'):
    with open(argv[argv.index('--out') + 1], 'w') as f:
        json.dump({}, f)
print('| table of', os.path.basename(argv[0]), '|')
print('wrote', argv[argv.index('--out') + 1])
'''


@pytest.mark.parametrize('write_json', [True, False])
def test_remeasure_script_runs_each_step_with_three_runs(write_json, tmp_path,
                                                         monkeypatch):
    """benchmarks/remeasure_summary.sh all: every step in order, with
    --runs 3 and arguments its benchmark's parser accepts; a step's
    Markdown is written only where its JSON was (a dry run leaves earlier
    results alone)."""
    fake = tmp_path / 'python'
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / 'calls.jsonl'
    env = dict(os.environ, PYTHON=str(fake), CALLS=str(calls),
               BENCH_RESULTS=str(tmp_path), WRITE_JSON='1' if write_json
               else '')
    script = osp.join(ROOT, 'benchmarks', 'remeasure_summary.sh')
    done = subprocess.run(['bash', script, 'all'], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    steps = ['forward_small', 'forward_large', 'train_step', 'whole_model',
             'allocators']
    assert [osp.basename(a[0]) for a in argvs] == [
        'backbone_latency.py', 'backbone_latency.py', 'train_step.py',
        'whole_model.py', 'deploy_latency.py']
    for step, argv in zip(steps, argvs):
        assert argv[argv.index('--runs') + 1] == '3'
        assert argv[-1] == str(tmp_path / f'remeasure_{step}.json')
        md = tmp_path / f'remeasure_{step}.md'
        assert md.exists() == write_json
        if write_json:
            assert md.read_text() == f'| table of {osp.basename(argv[0])} |\n'
        # The real parser accepts the arguments (--runs 3 hands over to
        # report_runs right after parsing: stopped there).
        module = importlib.import_module(osp.basename(argv[0])[:-3])
        with monkeypatch.context() as m:
            m.setattr(module, 'report_runs',
                      lambda *a, **k: dict(parsed=True, rows=[], table=''))
            assert module.main(argv[1:])['parsed']
    bad = subprocess.run(['bash', script, 'everything'], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "usage: " in bad.stderr and "got 'everything'" in bad.stderr


def test_deploy_latency_times_larger_batches_path_by_path(tmp_path,
                                                           monkeypatch):
    """Batch 1: every path in one interleaved group. Batch 2 and up: each
    path against the PyTorch fp32 baseline alone, its runtime released
    before the next (all seven at 4x3x800x1344 outgrew 24 GiB); the
    baseline and the matmul appear once per batch, every path once."""
    groups = []
    deploy_latency = stub_deploy_latency(monkeypatch, groups.append)
    wanted = ['OpenVINO bf16', 'OpenVINO int8']
    result = deploy_latency.main(
        ['--models', 'det', '--batches', '1', '2', '--paths', *wanted,
         *TINY, '--out', str(tmp_path / 'out.json')])
    base = deploy_latency.BASELINE
    assert groups == [[base, *wanted], [base, wanted[0]], [base, wanted[1]]]
    for batch in (1, 2):
        labels = [r['path'] for r in result['rows'] if r['batch'] == batch]
        assert sorted(labels) == sorted([base, *wanted, 'matmul 32^3'])
        assert all(r['x_pytorch_fp32'] > 0 for r in result['rows']
                   if r['batch'] == batch and r['path'] in wanted)
