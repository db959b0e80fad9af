"""The docs hold together: every relative link in README.md and docs/*.md
points at a file of the checkout (and an anchor at one of its headings), every
docs page is linked from the README, and every repository path the docs quote
(`sky_mithril/...`, `tests/...`) exists, so a moved module or test shows up here
instead of as a stale sentence. Reads files only; no network."""

import re
from pathlib import Path
from typing import List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / 'README.md'
PAGES = sorted((ROOT / 'docs').glob('*.md'))
DOCUMENTS = [README, *PAGES]

_FENCE = re.compile(r'^\s*(```|~~~)')
_HEADING = re.compile(r'^(#{1,6})\s+(.+?)\s*$')
_CODE_SPAN = re.compile(r'(`+)(.+?)\1', re.S)
_LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
_LINK_TEXT = re.compile(r'\[([^\]]*)\]\([^)]*\)')
_SCHEME = re.compile(r'^[a-z][a-z0-9+.-]*:', re.I)
# A quoted path into the checkout: a top-level folder, then no placeholders.
_REPO_PATH = re.compile(
    r'^(?:sky_mithril|tests|benchmarks|examples|catalog|docs|\.ci)/[\w./-]+$')


def _prose_and_headings(document: Path) -> Tuple[List[str], List[str]]:
    """The document's paragraphs outside fenced code blocks, and its headings."""
    paragraphs: List[str] = []
    headings: List[str] = []
    current: List[str] = []
    in_fence = False
    for line in document.read_text(encoding='utf-8').splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            line = ''
        elif in_fence:
            continue
        heading = _HEADING.match(line)
        if heading:
            headings.append(heading.group(2))
        if line.strip():
            current.append(line)
        elif current:
            paragraphs.append('\n'.join(current))
            current = []
    if current:
        paragraphs.append('\n'.join(current))
    return paragraphs, headings


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped,
    spaces to hyphens."""
    text = _LINK_TEXT.sub(r'\1', heading).lower()
    text = ''.join(c for c in text if c.isalnum() or c in ' -_')
    return text.replace(' ', '-')


def _anchors(document: Path) -> Set[str]:
    """Every anchor the document's headings give, numbered when repeated."""
    anchors: Set[str] = set()
    for heading in _prose_and_headings(document)[1]:
        anchor = base = _anchor(heading)
        repeat = 0
        while anchor in anchors:
            repeat += 1
            anchor = f'{base}-{repeat}'
        anchors.add(anchor)
    return anchors


def _links(document: Path) -> List[str]:
    """The targets of the document's links outside code."""
    return [target
            for paragraph in _prose_and_headings(document)[0]
            for target in _LINK.findall(_CODE_SPAN.sub('', paragraph))]


def _quoted_repo_paths(document: Path) -> List[str]:
    """The repository paths the document quotes in code spans."""
    return [span.strip()
            for paragraph in _prose_and_headings(document)[0]
            for _, span in _CODE_SPAN.findall(paragraph)
            if _REPO_PATH.match(span.strip())]


def _name(document: Path) -> str:
    return str(document.relative_to(ROOT))


def test_there_are_docs_pages():
    assert PAGES, 'no docs/*.md page'


@pytest.mark.parametrize('document', DOCUMENTS, ids=_name)
def test_relative_links_resolve(document: Path):
    broken = []
    for target in _links(document):
        if _SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition('#')
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.exists() or ROOT not in (path, *path.parents):
            broken.append(f'{target}: no such file in the checkout')
        elif anchor and (path.suffix != '.md' or anchor not in _anchors(path)):
            broken.append(f'{target}: no heading #{anchor} in {_name(path)}')
    assert not broken, f'{_name(document)}: ' + '; '.join(broken)


@pytest.mark.parametrize('document', DOCUMENTS, ids=_name)
def test_quoted_repository_paths_exist(document: Path):
    missing = [p for p in _quoted_repo_paths(document)
               if not (ROOT / p).exists()]
    assert not missing, (f'{_name(document)} names paths that do not exist '
                         f'(moved? update the docs): {missing}')


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition('#')[0]).resolve()
              for target in _links(README) if not _SCHEME.match(target)}
    unlinked = [_name(page) for page in PAGES if page.resolve() not in linked]
    assert not unlinked, f'README.md does not link {unlinked}'
