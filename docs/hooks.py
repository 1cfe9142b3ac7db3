"""MkDocs hook (mkdocs.yml ``hooks``): the docstrings cross-reference with
Sphinx roles (``:class:`~.base.SwinBackbone```), which Markdown renders as
the role's name before a code span. Show the code span alone, with the
name a reader looks for (the last dotted part where Sphinx would show it:
after ``~`` or a leading ``.``)."""
import re

ROLE = re.compile(r':(?:class|func|meth|mod|attr|obj|data|exc):'
                  r'<code>(~?)([\w.]+)</code>')


def short_name(match: 're.Match') -> str:
    tilde, name = match.groups()
    if tilde or name.startswith('.'):
        name = name.rsplit('.', 1)[-1]
    return f'<code>{name}</code>'


def on_page_content(html: str, **kwargs) -> str:
    """The page's HTML with every Sphinx role reduced to its code span."""
    return ROLE.sub(short_name, html)
