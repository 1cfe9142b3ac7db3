"""Every command in the ```bash blocks of README.md and docs/**/*.md runs,
so the README and the docs cannot drift from the code.

Each command runs as a reader types it after the Quick start's `make demo`
and `make test`: in the environment `make install` built (its bin first on
PATH, as after `source .venv/bin/activate`), from the repo root, with the
placeholders filled in (CONFIG: the toy config of the command's section,
the segmentation one in a section whose title says Segmentation;
CHECKPOINT, CKPT, DIR, WORK_DIR, IMAGE: temporary paths) and the optional
parts written out (``[--amp]`` becomes ``--amp``, ``...`` is dropped).

- ``make TARGET``: ``make -n TARGET`` (the target exists, its recipe
  expands);
- ``source .venv/bin/activate``: the environment the Makefile builds;
- anything else runs in bash with ``python`` a probe (tests/readme_probe.py)
  that stops each tool once its own parser has accepted the README's
  arguments, and ``srun`` a stand-in that runs its command. So the launchers
  (tools/dist_*.sh, slurm_train.sh) run for real down to the tool's parser;
  the tools' full runs are tested in test_tools_*.py and the others. Plain
  ``python SCRIPT ARGS`` lines go to one probe process together (one import
  of torch instead of one per line), from every page.

A block asks for other handling with an HTML comment on the line before
its fence:

- ``<!-- readme-test: run -->``: its commands run for real (the real
  ``python``), each must succeed within 120 s;
- ``<!-- readme-test: skip REASON -->``: not run (e.g. commands that install
  packages); the test shows the reason.
"""
import glob
import json
import os
import os.path as osp
import re
import shlex
import stat
import sys
from typing import Dict, List, NamedTuple

import pytest
from helpers import (
    ROOT,
    TOOL_ENV,
    TOY_DET_CONFIG,
    TOY_SEG_CONFIG,
    ToolRun,
    run_tool,
    run_tool_ok,
)

MARKER = re.compile(r'<!--\s*readme-test:\s*(run|skip)\b\s*(.*?)\s*-->')
# The config that CONFIG stands for, by a word in the title of the `## `
# section it is in.
SECTION_CONFIGS = {'Segmentation': TOY_SEG_CONFIG}
# The pages whose commands run: the README, then the docs in file order.
PAGES = ['README.md', *sorted(
    osp.relpath(p, ROOT) for p in glob.glob(
        osp.join(ROOT, 'docs', '**', '*.md'), recursive=True))]
LAYOUT_PAGE = osp.join('docs', 'en', 'advanced_guides', 'architecture.md')
# Programs the probe stands in for; anything else needs a marker.
PROBED = re.compile(r'^(python3?|(tools|demo|benchmarks)/\S+\.(sh|py))$')
PROBE = osp.join(ROOT, 'tests', 'readme_probe.py')


class Command(NamedTuple):
    """One command of a page: its `## ` section, the line, and how to run it
    (``probe``, ``run`` or ``skip``, with the skip's reason), and the page
    (its path from the repo root)."""
    section: str
    line: str
    mode: str
    reason: str
    page: str = 'README.md'


def readme_commands(text: str, page: str = 'README.md') -> List[Command]:
    """The commands of the ```bash blocks of one page's Markdown."""
    commands, section, previous = [], '', ''
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith('## '):
            section = line[3:].strip()
        if line.strip() == '```bash':
            marker = MARKER.search(previous)
            mode, reason = marker.groups() if marker else ('probe', '')
            block = []
            for body in lines:
                if body.startswith('```'):
                    break
                block.append(body)
            joined = '\n'.join(block).replace('\\\n', ' ')
            commands += [Command(section, c.strip(), mode, reason, page)
                         for c in joined.splitlines()
                         if c.strip() and not c.strip().startswith('#')]
        if line.strip():
            previous = line
    return commands


def page_commands(pages: List[str]) -> List[Command]:
    commands = []
    for page in pages:
        with open(osp.join(ROOT, page), encoding='utf-8') as f:
            commands += readme_commands(f.read(), page)
    return commands


COMMANDS = page_commands(PAGES)


def section_config(section: str) -> str:
    return next((config for word, config in SECTION_CONFIGS.items()
                 if word in section), TOY_DET_CONFIG)


def fill_placeholders(line: str, section: str, tmp: str) -> str:
    """The command with its placeholders filled and its optional parts
    written out."""
    values = {
        'CONFIG': section_config(section),
        'CHECKPOINT': osp.join(tmp, 'checkpoint.pth'),
        'CKPT': osp.join(tmp, 'checkpoint.pth'),
        'DIR': tmp, 'WORK_DIR': tmp,
        'IMAGE': osp.join(tmp, 'image.png'),
    }
    line = re.sub(r'(?<![^\s\[])\[', '', line)  # `[` opening a word
    line = re.sub(r'\](?=\]*(\s|$))', '', line)  # `]` closing one
    line = re.sub(r'\s\.\.\.(?=\s|$)', '', line)
    return re.sub(r'(?<![\w/.-])(' + '|'.join(values) + r')(?![\w/.-])',
                  lambda m: values[m.group(1)], line)


def program(line: str) -> str:
    """The command's program, after any VAR=value assignments."""
    words = shlex.split(line, comments=True)
    while words and re.match(r'^[A-Za-z_]\w*=', words[0]):
        words.pop(0)
    return words[0] if words else ''


def plain_python(line: str) -> bool:
    """``python SCRIPT.py ARGS`` with nothing else for a shell to do."""
    words = shlex.split(line, comments=True)
    code = line.split(' #')[0]
    return (len(words) > 1 and words[0] == 'python'
            and words[1].endswith('.py')
            and not re.search(r'[|;&<>$`]', code))


@pytest.fixture(scope='module')
def readme_tmp(tmp_path_factory) -> str:
    """What the placeholders point at (CHECKPOINT exists, empty)."""
    tmp = tmp_path_factory.mktemp('readme')
    (tmp / 'checkpoint.pth').touch()
    return str(tmp)


@pytest.fixture(scope='module')
def probed(readme_tmp, tmp_path_factory) -> Dict[str, ToolRun]:
    """Filled line -> the probe's result, for every plain python line that
    is probed, all from one probe process."""
    lines = [fill_placeholders(c.line, c.section, readme_tmp)
             for c in COMMANDS if c.mode == 'probe']
    lines = [line for line in lines if plain_python(line)]
    folder = tmp_path_factory.mktemp('probe')
    commands, results = folder / 'commands.json', folder / 'results.json'
    commands.write_text(json.dumps(
        [shlex.split(line, comments=True)[1:] for line in lines]))
    run_tool_ok([sys.executable, PROBE, '--batch', str(commands),
                 str(results)], timeout=300)
    return {line: ToolRun(r['code'], r['log']) for line, r in zip(
        lines, json.loads(results.read_text()))}


@pytest.fixture(scope='module')
def probe_path(tmp_path_factory) -> str:
    """PATH with the probe as `python` and the srun stand-in first, then
    the environment's bin (what `source .venv/bin/activate` gives)."""
    shims = tmp_path_factory.mktemp('shims')
    scripts = {
        'python': f'exec "{sys.executable}" "{PROBE}" "$@"',
        # srun's options, then the command it runs on every task
        'srun': 'while [ $# -gt 0 ]; do case "$1" in -p|-J|-n|-N) shift 2;; '
                '-*) shift;; *) break;; esac; done; exec "$@"',
    }
    for name, body in scripts.items():
        path = shims / name
        path.write_text(f'#!/bin/sh\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return os.pathsep.join(
        [str(shims), osp.dirname(sys.executable), os.environ['PATH']])


def run_in_bash(line: str, path: str):
    env = dict(TOOL_ENV, PATH=path)
    env.pop('PYTHON')  # the launchers find it as a reader's shell would
    return run_tool(['bash', '-c', line], timeout=120, env=env)


def check_make(words: List[str]) -> None:
    # CPU_ONLY: make install's GPU guard would stop a dry run on a GPU host
    code, log = run_tool(['make', '-n', *words[1:]], timeout=60,
                         env=dict(os.environ, CPU_ONLY='1'))
    assert code == 0, log[-3000:]


def check_activate(words: List[str]) -> None:
    with open(osp.join(ROOT, 'Makefile')) as f:
        venv = re.search(r'^VENV := (\S+)$', f.read(), re.M).group(1)
    assert words[1] == f'{venv}/bin/activate', (
        f'the docs activate {words[1]}; make builds {venv}')


@pytest.mark.parametrize(
    'command', COMMANDS,
    ids=[f'{c.page}: {c.section}: {c.line}' for c in COMMANDS])
def test_readme_command_runs(command, probe_path, readme_tmp, probed):
    if command.mode == 'skip':
        assert command.reason, 'say why: <!-- readme-test: skip REASON -->'
        pytest.skip(command.reason)
    line = fill_placeholders(command.line, command.section, readme_tmp)
    if command.mode == 'run':
        code, log = run_in_bash(line, os.pathsep.join(
            [osp.dirname(sys.executable), os.environ['PATH']]))
        assert code == 0, log[-3000:]
        return
    words = shlex.split(line, comments=True)
    name = program(line)
    if name == 'make':
        return check_make(words)
    if name in ('source', '.'):
        return check_activate(words)
    assert PROBED.match(name), (
        f'{name!r} is not a tool the probe stands in for: mark its block '
        '<!-- readme-test: run --> or <!-- readme-test: skip REASON -->')
    code, log = probed[line] if line in probed else run_in_bash(
        line, probe_path)
    assert code == 0, f'{line}\n{log[-3000:]}'
    assert re.search(r'^readme-probe: \S+ parsed', log, re.M), (
        f'{line}: no tools/ script parsed its arguments (a command that runs '
        'none needs <!-- readme-test: run -->)\n' + log[-3000:])


def test_readme_lists_commands_and_activates_the_environment():
    quick_start = [c.line for c in COMMANDS
                   if c.section == 'Quick start' and c.page == 'README.md']
    assert quick_start[:2] == [
        'make demo   # toy COCO data -> train a small Swin Mask R-CNN -> '
        'mAP + pictures', 'make test   # the test suite']
    assert any(program(line) == 'source' for line in quick_start)
    assert len(COMMANDS) >= 15, COMMANDS


def test_every_page_is_read():
    """The docs' pages are found, and a block in one of them is parsed with
    its page and section (a control for the glob and the parser)."""
    assert {'README.md', osp.join('docs', 'en', 'get_started.md'),
            LAYOUT_PAGE} <= set(PAGES), PAGES
    page = osp.join('docs', 'en', 'x.md')
    text = ('## Segmentation\n\n<!-- readme-test: skip why -->\n'
            '```bash\npython tools/test.py CONFIG CKPT\n```\n')
    assert readme_commands(text, page) == [Command(
        'Segmentation', 'python tools/test.py CONFIG CKPT', 'skip', 'why',
        page)]
    line = fill_placeholders('python tools/test.py CONFIG',
                             'Segmentation (mmseg)', '/tmp')
    assert line == f'python tools/test.py {TOY_SEG_CONFIG}'
    assert any(c.page.startswith('docs') for c in COMMANDS)


def test_probe_refuses_an_argument_the_tool_lacks(probe_path, tmp_path):
    """Control: a flag the tool does not have fails, with argparse's
    message, as it would for a reader."""
    line = fill_placeholders('python tools/train.py CONFIG --no-such-flag',
                             'Detection', str(tmp_path))
    code, log = run_in_bash(line, probe_path)
    assert code == 2
    assert 'unrecognized arguments: --no-such-flag' in log


def test_launcher_finds_the_venv_when_python_lacks_torch(tmp_path):
    """`tools/dist_train.sh CONFIG N` with PYTHON unset and a `python`
    without torch first on PATH (a fresh shell) runs the .venv's Python."""
    venv_python = osp.join(ROOT, '.venv', 'bin', 'python')
    if not os.access(venv_python, os.X_OK):
        pytest.skip('no .venv here (make install builds it)')
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho "No module named torch" >&2; exit 1\n')
    fake.chmod(0o755)
    path = os.pathsep.join([str(tmp_path), '/usr/bin', '/bin'])
    code, log = run_in_bash('bash tools/find_python.sh', path)
    assert (code, log.strip()) == (0, venv_python)
    code, log = run_in_bash(f'tools/dist_train.sh {TOY_DET_CONFIG} 1 --help',
                            path)
    assert code == 0, log[-3000:]
    assert 'usage: train.py' in log


def test_repository_layout_names_every_folder_and_tool():
    """The Repository layout (docs, Architecture) names each mmswin
    package, each top-level folder and each tools/ script and folder (git's
    files)."""
    with open(osp.join(ROOT, LAYOUT_PAGE)) as f:
        text = f.read()
    layout = text.split('## Repository layout', 1)[1].split('```')[1]
    if not osp.exists(osp.join(ROOT, '.git')):
        pytest.skip('not a git checkout: no list of the tree')
    files = run_tool_ok(['git', 'ls-files', '--cached', '--others',
                         '--exclude-standard'], timeout=60).split()
    files = [f for f in files if osp.exists(osp.join(ROOT, f))]
    expected = {f.split('/')[0] + '/' for f in files if '/' in f
                and not f.startswith('.')}
    expected |= {f.split('/')[-2] + '/' for f in files
                 if f.startswith('mmswin/') and f.endswith('/__init__.py')
                 and f.count('/') > 1}
    expected |= {f.split('/')[1] + ('/' if f.count('/') > 1 else '')
                 for f in files if f.startswith('tools/')}
    missing = sorted(name for name in expected if name not in layout)
    assert not missing, f'{LAYOUT_PAGE}: Repository layout lacks {missing}'
