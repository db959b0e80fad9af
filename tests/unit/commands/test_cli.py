"""`sky-mithril` keeps SkyPilot's CLI habits: help instead of an error for a
bare group, `--version`, `-h`, help text on every option, examples in every
command's help, and one error format (`sky-mithril CMD: message`) for usage
errors and failures alike."""

from pathlib import Path
from typing import Iterator, List, Tuple

import click
import pytest

from sky_mithril import __version__
from sky_mithril import cli


def _walk(command: click.Command,
          path: Tuple[str, ...] = ()) -> Iterator[Tuple[Tuple[str, ...],
                                                        click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(cli.cli))
LEAVES = [(path, command) for path, command in COMMANDS
          if not isinstance(command, click.Group)]
GROUPS = [path for path, command in COMMANDS if isinstance(command, click.Group)]


def _id(path: Tuple[str, ...]) -> str:
    return ' '.join(('sky-mithril', *path))


@pytest.mark.parametrize('path', GROUPS, ids=_id)
def test_a_bare_group_prints_its_help(run, path):
    result = run(*path)
    assert result.code == 0 and result.err == ''
    assert result.out.startswith(f'Usage: {_id(path)} [OPTIONS] COMMAND')
    assert 'Commands:' in result.out
    listing = result.out.split('Commands:')[1].split('Examples:')[0]
    assert '...' not in listing, f'a command\'s short help is cut:\n{listing}'


def test_version_and_short_help(run):
    version = run('--version')
    assert version.code == 0 and version.out == f'sky-mithril {__version__}\n'
    short = run('instance', 'create', '-h')
    assert short.code == 0 and short.out.startswith('Usage: sky-mithril instance create')


@pytest.mark.parametrize('path,command', COMMANDS, ids=lambda x: (
    _id(x) if isinstance(x, tuple) else ''))
def test_every_option_and_command_is_explained(path, command):
    assert command.help, f'{_id(path)} has no help'
    unexplained = [param.name for param in command.params
                   if isinstance(param, click.Option) and not param.help]
    assert not unexplained, f'{_id(path)}: options without help: {unexplained}'


@pytest.mark.parametrize('path,command', LEAVES, ids=lambda x: (
    _id(x) if isinstance(x, tuple) else ''))
def test_every_command_shows_examples_of_itself(run, path, command):
    result = run(*path, '--help')
    assert result.code == 0
    examples = result.out.split('Examples:\n', 1)[1].splitlines()
    mine = [line for line in examples
            if line.strip().removeprefix('sudo ').startswith(_id(path))]
    assert mine, f'{_id(path)}: no example of itself in\n{result.out}'


def _option_help(path: Tuple[str, ...], letter: str) -> str:
    command = dict(COMMANDS)[path]
    [option] = [p for p in command.params if letter in getattr(p, 'opts', [])]
    return option.help or ''


@pytest.mark.parametrize('path,letter,in_sky', [
    (('instance', 'create'), '-n', 'in `sky launch`, -n names the task'),
    (('instance', 'delete'), '-n', 'in `sky launch`, -n names the task'),
    (('instance', 'create'), '-r', 'in `sky launch`, -r is --retry-until-up'),
    (('instance', 'create'), '-i', 'in `sky launch`, -i is the autostop idle time'),
    (('instance', 'create'), '-d', 'in `sky launch`, -d is --detach-run'),
    (('instance', 'list-types'), '-r', 'In `sky status`, -r is --refresh'),
    (('volumes', 'ls'), '-r', 'In `sky status`, -r is --refresh'),
])
def test_letters_that_mean_something_else_in_sky_say_so(path, letter, in_sky):
    assert in_sky in _option_help(path, letter)


def test_create_names_a_bid_and_delete_takes_a_glob():
    assert _option_help(('instance', 'create'), '-n').startswith("the bid's name")
    assert 'matches a glob' in _option_help(('instance', 'delete'), '-n')


def test_an_alias_works_and_is_listed_once(run):
    assert run('volumes', 'list', '--help').out == run('volumes', 'ls', '--help').out.replace(
        'Usage: sky-mithril volumes ls', 'Usage: sky-mithril volumes list')
    listing = run('volumes').out
    assert 'ls ' in listing and '  list ' not in listing


def _first_line(text: str) -> str:
    return text.splitlines()[0]


@pytest.mark.parametrize('argv,code,first_line', [
    (['instance', 'create', '-i', 'x', '-r', 'y', '-m', 'abc'], 2,
     'sky-mithril instance create: Invalid value for -m/--max-price-per-hour: '),
    (['instance', 'create', '-r', 'y', '-m', '8'], 2,
     'sky-mithril instance create: Missing option -i/--instance-type.'),
    (['instance', 'list', '--state', 'sleepy'], 2,
     "sky-mithril instance list: Invalid value for -s/--state: unknown state 'sleepy'"),
    (['volumes', 'create'], 2,
     "sky-mithril volumes create: Missing argument NAME."),
    (['instance', 'nope'], 2, "sky-mithril instance: No such command 'nope'."),
    (['--nope'], 2, 'sky-mithril: No such option: --nope'),
    (['instance', 'list'], 1, 'sky-mithril instance list: No Mithril API key found'),
    (['prices', 'X100'], 1, "sky-mithril prices: Unknown GPU 'X100'."),
])
def test_every_error_has_one_prefix(run, argv, code, first_line):
    result = run(*argv)
    assert result.code == code and result.out == ''
    assert _first_line(result.err).startswith(first_line), result.err
    if code == 2:
        assert result.err.splitlines()[1] == (
            f'Try `{first_line.split(":")[0]} --help` for its options and examples.')


def test_a_bug_keeps_its_traceback(run, monkeypatch):
    from sky_mithril.commands import common  # pylint: disable=import-outside-toplevel

    def broken(*_: object) -> None:
        raise KeyError('a bug')

    monkeypatch.setattr(common, 'connect', broken)
    with pytest.raises(KeyError):
        run('instance', 'list')


def test_the_console_script_is_the_click_entry_point():
    pyproject = (Path(__file__).resolve().parents[3] / 'pyproject.toml').read_text()
    assert 'sky-mithril = "sky_mithril.cli:main"' in pyproject
    assert '"click' in pyproject


def test_main_reads_sys_argv(monkeypatch, capsys):
    argv: List[str] = ['sky-mithril', '--version']
    monkeypatch.setattr('sys.argv', argv)
    assert cli.main() == 0
    assert capsys.readouterr().out == f'sky-mithril {__version__}\n'
