"""Installing into a GPU environment, `make install`'s GPU guard, `make
gpu-check` and the `--device` option of the test suite.

- setup.py's install_requires are what `import mmswin` needs (torch,
  mmengine, numpy, safetensors), so `pip install -e .` keeps a GPU user's
  torch and mmcv; mmcv, mmdet and mmseg are the `openmmlab` extra, and
  mmswin imports and runs with them blocked.
- `make install` builds a CPU-only stack; where nvidia-smi sees a GPU it
  stops and says what to run, unless CPU_ONLY=1 (checked with a fake
  nvidia-smi and `make -n`, which runs the guard but builds nothing).
- `make gpu-check` without CUDA says so and exits 0; its summary names the
  tests that failed on CUDA.
"""
import ast
import json
import os
import os.path as osp
import re
import sys
from typing import Dict, List, Set

import pytest
import torch
from helpers import ROOT, load_tool, run_tool, run_tool_ok

OPENMMLAB = {'mmcv', 'mmdet', 'mmsegmentation'}


def setup_requirements() -> Dict[str, List[str]]:
    """install_requires and each extra of setup.py, as package names."""
    with open(osp.join(ROOT, 'setup.py')) as f:
        call = next(node for node in ast.walk(ast.parse(f.read()))
                    if isinstance(node, ast.Call)
                    and getattr(node.func, 'id', '') == 'setup')
    keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords
                if k.arg in ('install_requires', 'extras_require')}

    def names(requirements):
        return [re.match(r'[\w.-]+', r).group(0) for r in requirements]
    return dict(install_requires=names(keywords['install_requires']),
                **{extra: names(reqs) for extra, reqs in
                   keywords['extras_require'].items()})


@pytest.fixture(scope='module')
def bare_mmswin() -> dict:
    """In a fresh Python with mmcv, mmdet and mmseg unimportable: import
    mmswin, build a small backbone through its registry and run it. The
    output shapes and the files of the mmswin modules that got imported."""
    code = '''
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmcv', 'mmdet', 'mmseg'):
            raise ImportError(f'{name} is blocked')
sys.meta_path.insert(0, Block())
import torch
from mmswin.registry import MODELS
model = MODELS.build(dict(type='SwinTransformer', arch=dict(
    embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))))
outs = model.eval()(torch.randn(1, 3, 64, 64))
print(json.dumps(dict(shapes=[list(o.shape) for o in outs], files=[
    m.__file__ for name, m in list(sys.modules.items())
    if name.split('.')[0] == 'mmswin'])))
'''
    log = run_tool_ok([sys.executable, '-c', code], timeout=120)
    return json.loads(log.strip().splitlines()[-1])


def third_party_imports(files: List[str], top_level_only: bool) -> Set[str]:
    """Packages other than the standard library's and mmswin that ``files``
    import (at module level only, or anywhere: lazy imports too)."""
    found = set()
    for path in files:
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in tree.body if top_level_only else ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                found.add(node.module.split('.')[0])
    return found - set(sys.stdlib_module_names) - {'mmswin'}


def test_install_requires_are_what_import_mmswin_needs(bare_mmswin):
    """install_requires hold the packages that the modules `import mmswin`
    loads import, and nothing those modules never import."""
    requirements = setup_requirements()
    needed = set(requirements['install_requires'])
    files = bare_mmswin['files']
    assert third_party_imports(files, top_level_only=True) <= needed
    assert needed <= third_party_imports(files, top_level_only=False)
    assert needed == {'torch', 'mmengine', 'numpy', 'safetensors'}
    assert set(requirements['openmmlab']) == OPENMMLAB
    with open(osp.join(ROOT, 'Makefile')) as f:
        assert '-e ".[openmmlab,' in f.read()  # make's stack has them


def test_mmswin_imports_and_runs_without_openmmlab_packages(bare_mmswin):
    assert bare_mmswin['shapes'] == [[1, 16, 16, 16], [1, 32, 8, 8],
                                     [1, 64, 4, 4], [1, 128, 2, 2]]


# -- make install's GPU guard -------------------------------------------------
def make_dry_run(tmp_path, nvidia_smi: str, **variables: str):
    """`make -n -B install` (prints the recipe, builds nothing; the guard
    runs) with ``nvidia-smi`` a script whose body is ``nvidia_smi``. The
    printed recipe holds the guard's text too, split over lines: its
    output is what joins those lines."""
    fake = tmp_path / 'nvidia-smi'
    fake.write_text(f'#!/bin/sh\n{nvidia_smi}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=os.pathsep.join([str(tmp_path), '/usr/bin',
                                                 '/bin']))
    env.pop('CPU_ONLY', None)
    assignments = [f'{k}={v}' for k, v in variables.items()]
    return run_tool(['make', '-n', '-B', 'install', *assignments],
                    timeout=60, env=env)


GPU = 'echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"'
NO_DRIVER = 'echo "NVIDIA-SMI has failed" >&2; exit 9'
STOPPED = ('make install: nvidia-smi sees a GPU, but this target builds a '
           'CPU-only stack')


def test_make_install_stops_where_nvidia_smi_sees_a_gpu(tmp_path):
    code, log = make_dry_run(tmp_path, GPU)
    assert code != 0
    assert STOPPED in log
    assert 'with CUDA torch (docs/en/get_started.md: "Install into an ' \
        'existing environment (GPU)"):\n  pip install -U openmim && mim ' \
        'install "mmcv>=2.0.0,<2.2.0"\n  pip install -e ".[openmmlab]"\n' \
        'For the CPU-only stack anyway: make install CPU_ONLY=1' in log
    assert 'FORCE_CUDA=0' not in log  # stopped before the CPU-only build


@pytest.mark.parametrize('nvidia_smi, variables', [
    (NO_DRIVER, {}), (GPU, {'CPU_ONLY': '1'})])
def test_make_install_builds_the_cpu_stack_otherwise(tmp_path, nvidia_smi,
                                                     variables):
    code, log = make_dry_run(tmp_path, nvidia_smi, **variables)
    assert code == 0, log
    assert 'FORCE_CUDA=0' in log and STOPPED not in log


# -- make gpu-check and --device ----------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA: it would run')
def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    log = run_tool_ok(['make', 'gpu-check', f'GPU_PYTHON={sys.executable}',
                       f'GPU_CHECK_OUT={tmp_path}'], timeout=120)
    assert 'make gpu-check skipped: no CUDA device' in log
    summary = (tmp_path / 'summary.md').read_text()
    assert summary.startswith('# make gpu-check\n\nskipped: no CUDA device')


JUNIT = ('<testsuites><testsuite tests="{tests}" failures="{failures}" '
         'errors="0" skipped="{skipped}">{cases}</testsuite></testsuites>')


@pytest.mark.parametrize('failures, skipped, passed', [
    (1, 0, False), (0, 3, False), (0, 1, True)])
def test_gpu_check_summary_of_the_tests(tmp_path, monkeypatch, failures,
                                        skipped, passed):
    """The test step fails if a test failed, or if every test skipped
    (nothing ran on the GPU); failed tests are named."""
    gpu_check = load_tool('tools/misc/gpu_check.py')
    cases = '<testcase classname="test_a" name="test_fails"><failure/>' \
        '</testcase>' * failures

    def fake_pytest(argv, log_path, limit_s):
        (tmp_path / 'tests.xml').write_text(JUNIT.format(
            tests=3, failures=failures, skipped=skipped, cases=cases))
        return int(failures > 0), 1.0
    monkeypatch.setattr(gpu_check, 'run_logged', fake_pytest)
    step = gpu_check.run_tests(str(tmp_path))
    assert step.passed is passed
    assert ('failed: `test_a::test_fails`' in step.details) == (failures > 0)
    assert f'3 tests, {failures} failures, 0 errors, {skipped} skipped' in \
        step.details


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA: it would run')
def test_device_option_selects_the_device_tests(tmp_path):
    """MMSWIN_TEST_DEVICE=cuda (the default of --device): only tests taking
    the `device` fixture run, and without CUDA they skip saying why."""
    (tmp_path / 'test_example.py').write_text(
        'def test_on_device(device):\n    assert device.type == "cuda"\n\n'
        'def test_cpu_only():\n    pass\n')
    env = dict(os.environ, MMSWIN_TEST_DEVICE='cuda',
               PYTHONPATH=osp.join(ROOT, 'tests'))
    code, log = run_tool(
        [sys.executable, '-m', 'pytest', '-p', 'conftest', '-rs', '-q',
         '-p', 'no:cacheprovider', str(tmp_path / 'test_example.py')],
        timeout=120, env=env)
    assert code == 0, log
    assert '1 skipped, 1 deselected' in log
    assert 'sees no CUDA device' in log
