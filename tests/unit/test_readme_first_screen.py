"""The README's first lines are the two commands of a checkout (the demo,
and the test command exactly as CI runs it); then its first screen is a
user's: one sentence of what it is, then install, setup with the key, check,
an example written out, launch; and the one page it links for a launch
without an account shows the same path on the emulator, with `--hosts
namespace`."""

import re
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]
FIRST_SCREEN = 28


def _first_screen() -> List[str]:
    return (ROOT / 'README.md').read_text(encoding='utf-8').splitlines()[:FIRST_SCREEN]


def _in_order(lines: List[str], commands: List[str]) -> None:
    at = -1
    for command in commands:
        found = [i for i, line in enumerate(lines) if line.startswith(command)]
        assert found and found[0] > at, f'{command!r} missing or out of order'
        at = found[0]


def test_the_first_screen_walks_a_user_to_a_launch():
    lines = _first_screen()
    assert lines[0] == '# sky-mithril'
    assert any('SkyPilot cloud plugin' in line for line in lines[6:10])
    _in_order(lines, ['pip install sky-mithril', 'sky-mithril setup --api-key',
                      'sky api stop', 'sky check mithril',
                      'sky-mithril examples hello > hello.yaml',
                      'sky launch -c hello hello.yaml'])


def test_the_demo_and_the_tests_are_the_first_lines():
    lines = _first_screen()[:6]
    ci = (ROOT / '.ci' / 'run').read_text(encoding='utf-8')
    tests = "pip install '.[test]' && python -m pytest -q"
    assert tests in ci.splitlines()
    _in_order(lines, ["pip install '.[test]' && sky-mithril demo",
                      tests + '   # the tests'])
    text = ' '.join(_first_screen())
    assert 'needs root' in text and 'Debian packages' in text


def test_the_linked_page_launches_on_the_emulator():
    link = re.search(r'\(docs/emulator\.md#([\w-]+)\)', ' '.join(_first_screen()))
    assert link and link.group(1) == 'a-first-launch-without-an-account'
    page = (ROOT / 'docs' / 'emulator.md').read_text(encoding='utf-8')
    section = page.split('## A first launch without an account', 1)[1].split('\n## ', 1)[0]
    _in_order(section.splitlines(), [
        'sky-mithril setup', 'sudo "$(command -v sky-mithril)" emulator --hosts namespace',
        'export MITHRIL_API_URL=', 'sky api stop', 'sky check mithril',
        'sky-mithril examples hello > hello.yaml', 'sky launch -c hello hello.yaml'])
    assert 'serves the API only' in section
