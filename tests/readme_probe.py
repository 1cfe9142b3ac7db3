"""The `python` of tests/test_readme_commands.py: runs a tool up to the end
of its argument parsing and stops there.

    python [-u] SCRIPT.py ARGS...             SCRIPT's parser
    python -m torch.distributed.run OPTS SCRIPT.py ARGS...
                                              torchrun's, then SCRIPT's
    anything else (python -c CODE, -m MOD)    the real interpreter

Once SCRIPT's own ``ArgumentParser.parse_args`` accepts ARGS it prints
``readme-probe: SCRIPT parsed ...`` and exits 0; a bad argument exits 2 with
argparse's message, as the tool itself would.

    python readme_probe.py --batch COMMANDS.json RESULTS.json

probes many ``[SCRIPT.py, ARGS...]`` lists in this one process (torch and
the tools' libraries import once) and writes ``{"code", "log"}`` for each.
"""
import argparse
import io
import json
import os
import os.path as osp
import runpy
import sys
from contextlib import redirect_stderr, redirect_stdout
from typing import Dict, List, Union

TORCHRUN = 'torch.distributed.run'


class ArgumentsParsed(Exception):
    """Raised by the patched parse_args once the tool's arguments parsed."""


def probe(script: str, args: List[str]) -> int:
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, *a, **kw):
        raise ArgumentsParsed(parse_args(self, *a, **kw))

    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [script, *args]
    sys.path[0] = osp.dirname(osp.abspath(script))  # as `python SCRIPT` has
    try:
        runpy.run_path(script, run_name='__main__')
    except ArgumentsParsed as parsed:
        print(f'readme-probe: {script} parsed {parsed.args[0]}')
        return 0
    finally:
        argparse.ArgumentParser.parse_args = parse_args
    print(f'readme-probe: {script} ended without parsing arguments',
          file=sys.stderr)
    return 3


def probe_captured(argv: List[str]) -> Dict[str, Union[int, str]]:
    """probe(argv[0], argv[1:]) with its exit status and output."""
    log = io.StringIO()
    with redirect_stdout(log), redirect_stderr(log):
        try:
            code = probe(argv[0], argv[1:])
        except SystemExit as stop:  # argparse's errors, or the tool's
            code = stop.code if isinstance(stop.code, int) else int(
                stop.code is not None)
    return dict(code=code, log=log.getvalue())


def main(argv: List[str]) -> int:
    if argv[:1] == ['--batch']:
        with open(argv[1]) as f:
            results = [probe_captured(command) for command in json.load(f)]
        with open(argv[2], 'w') as f:
            json.dump(results, f)
        return 0
    rest = list(argv)
    while rest and rest[0] in ('-u', '-B', '-O'):  # flags with no value
        rest.pop(0)
    if rest and rest[0].endswith('.py'):
        return probe(rest[0], rest[1:])
    if rest[:2] == ['-m', TORCHRUN]:
        from torch.distributed.run import get_args_parser
        launch = get_args_parser().parse_args(rest[2:])
        return probe(launch.training_script, launch.training_script_args)
    os.execv(sys.executable, [sys.executable, *argv])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
