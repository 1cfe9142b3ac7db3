"""The documentation site builds in strict mode, as `make docs` builds it.

- ``mkdocs build --strict`` on mkdocs.yml: a link to a missing page or
  anchor, a page left out of the nav or a nav entry without a page is a
  warning, and strict mode makes any warning fail the build. Controls: a
  copy of the docs with each of those faults fails.
- The API reference renders the public classes' docstrings (their Args and
  Shape text appear in the HTML, Sphinx roles as code), and lists every
  module of mmswin.deploy.
- Lists render as lists; every ```python block parses.
- The README links every page of the site; each of its relative links
  points at a file that exists, and its anchor at a heading that the built
  page has.
"""
import ast
import glob
import os
import os.path as osp
import re
import shutil
import sys
from typing import Tuple

import pytest
import yaml
from helpers import ROOT, run_tool

CONFIG = osp.join(ROOT, 'mkdocs.yml')
DOCS = osp.join(ROOT, 'docs', 'en')
# mkdocs-material's notice about MkDocs 2.0 (not a build warning).
ENV = dict(os.environ, NO_MKDOCS_2_WARNING='1')


def build(config: str, site: str) -> Tuple[int, str]:
    """``mkdocs build --strict`` of ``config`` into ``site``."""
    return run_tool([sys.executable, '-m', 'mkdocs', 'build', '--strict',
                     '-f', config, '-d', site], timeout=300, env=ENV)


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> str:
    """The site, built once from the repository's docs."""
    folder = str(tmp_path_factory.mktemp('site'))
    code, log = build(CONFIG, folder)
    assert code == 0, log[-5000:]
    assert not re.search(r'^WARNING', log, re.M), log[-5000:]
    return folder


def nav_pages(nav) -> list:
    """The page files of an mkdocs nav, in order."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) \
            else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def read_config() -> dict:
    with open(CONFIG) as f:
        return yaml.safe_load(f)


def test_every_page_is_built(site):
    pages = nav_pages(read_config()['nav'])
    on_disk = sorted(osp.relpath(osp.join(d, f), DOCS)
                     for d, _, files in os.walk(DOCS)
                     for f in files if f.endswith('.md'))
    assert sorted(pages) == on_disk
    for page in pages:
        assert osp.isfile(osp.join(site, page[:-3] + '.html')), page


def test_api_reference_renders_the_docstrings(site):
    with open(osp.join(site, 'api.html'), encoding='utf-8') as f:
        html = f.read()
    for name in ['SwinTransformer', 'SwinTransformerV2', 'load_pretrained',
                 'convert_state_dict', 'ResumableCheckpointHook',
                 'ResumableBatchSampler', 'export_onnx', 'OrtRunner',
                 'paste_masks']:
        assert re.search(rf'id="mmswin\.[\w.]*\b{name}"', html), name
    # text from the docstrings' bodies, not only the names
    assert 'pre-norm blocks, scaled dot-product' in html
    assert 'Shape' in html
    # Sphinx roles in the docstrings read as code (docs/hooks.py)
    with open(osp.join(ROOT, 'mmswin', 'models', 'backbones', 'swin.py'),
              encoding='utf-8') as f:
        assert ':class:`~.base.SwinBackbone`' in f.read()
    assert re.search(r'<code>SwinBackbone</code>\s+for\s+the\s+arguments',
                     html)
    assert not re.search(r':(class|func|meth|mod):<code>', html)


def test_api_reference_lists_every_deploy_module(site):
    import mmswin.deploy as deploy
    with open(osp.join(site, 'api.html'), encoding='utf-8') as f:
        html = f.read()
    modules = {*deploy._LAZY.values(), 'pooling', 'preprocess'}
    missing = sorted(m for m in modules
                     if f'id="mmswin.deploy.{m}"' not in html)
    assert not missing, f'the API reference lacks mmswin.deploy {missing}'


def test_readme_links_reach_pages_and_headings(site):
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    links = re.findall(r'\]\(([^)\s]+)\)', readme)
    # Links within the README go to its own headings (GitHub's slugs).
    slugs = {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-')
             for h in re.findall(r'^#+ (.+)$', readme, re.M)}
    inside = [link[1:] for link in links if link.startswith('#')]
    assert set(inside) <= slugs, f'no README heading {set(inside) - slugs}'
    local = [link for link in links
             if '://' not in link and not link.startswith('#')]
    linked = {osp.relpath(osp.join(ROOT, link.partition('#')[0]), DOCS)
              for link in local}
    unreachable = set(nav_pages(read_config()['nav'])) - linked
    assert not unreachable, f'the README links no {sorted(unreachable)}'
    for link in local:
        path, _, anchor = link.partition('#')
        assert osp.exists(osp.join(ROOT, path)), link
        if anchor:
            page = osp.relpath(osp.join(ROOT, path), DOCS)[:-3] + '.html'
            with open(osp.join(site, page), encoding='utf-8') as f:
                assert f'id="{anchor}"' in f.read(), link


FAULTS = {
    'nothing (the control of the controls)': None,
    'a link to a missing page': ('get_started.md', '[x](no_such_page.md)',
                                 'no_such_page.md'),
    'a link to a missing anchor': ('get_started.md', '[x](#no-such-anchor)',
                                   'no-such-anchor'),
    'a page missing from the nav': ('orphan.md', '# Orphan', 'orphan.md'),
    'a nav entry without page': (None, 'missing.md', 'missing.md'),
}


@pytest.mark.parametrize('fault', list(FAULTS))
def test_strict_build_fails_on(fault, tmp_path):
    """Controls: a copy of the docs with one fault fails the strict build,
    naming the fault; the copy without one builds. (mkdocstrings is left
    out here: the API page's ``:::`` lines stay text.)"""
    docs = tmp_path / 'docs'
    shutil.copytree(DOCS, docs)
    config = read_config()
    config.update(docs_dir=str(docs), plugins=['search'])
    config.pop('hooks')
    page, text, named = FAULTS[fault] or (None, None, None)
    if page:
        with open(docs / page, 'a', encoding='utf-8') as f:
            f.write(f'\n{text}\n')
    elif text:
        config['nav'].append({'Missing': text})
    (tmp_path / 'mkdocs.yml').write_text(yaml.safe_dump(config))
    code, log = build(str(tmp_path / 'mkdocs.yml'), str(tmp_path / 'site'))
    if named is None:
        assert code == 0, log[-3000:]
        return
    assert code != 0, log[-3000:]
    assert named in log, log[-3000:]


def list_faults(text: str) -> list:
    """Lines where Python-Markdown (MkDocs) would not start the list that
    GitHub shows: a list item right under a line of text (it joins the
    paragraph), or a nested item indented by fewer than 4 spaces (it stays
    flat). Fenced code is skipped."""
    faults, previous, fenced = [], '', False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith('```'):
            fenced = not fenced
        elif not fenced and re.match(r'( *)[-*] ', line):
            indent = len(line) - len(line.lstrip())
            if indent == 0 and previous.strip() and not re.match(
                    r'\s*([-*]|\d+\.) |\s', previous):
                faults.append((number, 'no blank line before the list'))
            if 0 < indent < 4:
                faults.append((number, 'nested item indented < 4 spaces'))
        previous = line
    return faults


def test_lists_render_as_lists():
    assert list_faults('text\n- item\n') == [
        (2, 'no blank line before the list')]
    assert list_faults('- a\n  - b\n') == [
        (2, 'nested item indented < 4 spaces')]
    assert list_faults('text\n\n- a\n- b\n  more\n\n    - c\n') == []
    found = []
    for page in sorted(glob.glob(osp.join(DOCS, '**', '*.md'),
                                 recursive=True)):
        with open(page, encoding='utf-8') as f:
            found += [f'{osp.relpath(page, ROOT)}:{n}: {why}'
                      for n, why in list_faults(f.read())]
    assert not found, '\n'.join(found)


def test_python_blocks_parse():
    """Every ```python block of the README and the docs is valid Python
    (they are not run: they need checkpoints, images or a GPU)."""
    bad, count = [], 0
    pages = [osp.join(ROOT, 'README.md'), *glob.glob(
        osp.join(DOCS, '**', '*.md'), recursive=True)]
    for page in pages:
        with open(page, encoding='utf-8') as f:
            blocks = re.findall(r'^```python\n(.*?)^```', f.read(),
                                re.M | re.S)
        count += len(blocks)
        for block in blocks:
            try:
                ast.parse(block)
            except SyntaxError as error:
                bad.append(f'{osp.relpath(page, ROOT)}: {error}')
    assert not bad, '\n'.join(bad)
    assert count >= 6, count
    with pytest.raises(SyntaxError):  # control: what a typo gives
        ast.parse("backbone=dict(type='mmswin.SwinTransformer'")
