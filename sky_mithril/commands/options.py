"""The click pieces every `sky-mithril` command family builds on, so the whole
CLI keeps SkyPilot's habits: `-h/--help`, help that ends with examples, a
group without a subcommand printing its help, argument types whose refusals
name the fix, and one way to write an error (`sky-mithril CMD: message`)."""

from typing import Any, Callable, Dict, List, Optional, Sequence

import click

# The top group's; every subcommand's context inherits them.
CONTEXT_SETTINGS: Dict[str, Any] = {'help_option_names': ['-h', '--help'],
                                    'max_content_width': 100}


def examples(*lines: str) -> str:
    """A command's epilog: its examples, each `command  # what it does`, kept
    as written (click rewraps other paragraphs)."""
    return '\b\nExamples:\n' + '\n'.join(f'  {line}' for line in lines)


class Group(click.Group):
    """A command group that lists its commands in the order they were added,
    prints its help when run without one, and knows aliases (`volumes list`
    for `volumes ls`) without listing them twice."""

    def __init__(self, *args: Any, aliases: Optional[Dict[str, str]] = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases = dict(aliases or {})

    def list_commands(self, ctx: click.Context) -> List[str]:
        return list(self.commands)

    def get_command(self, ctx: click.Context,
                    cmd_name: str) -> Optional[click.Command]:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


class Parsed(click.ParamType):
    """An argument type from a function of the text that returns the value
    or raises click.BadParameter saying what is wrong and what to write."""

    def __init__(self, name: str, parse: Callable[[str], Any]) -> None:
        self.name = name
        self._parse = parse

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> Any:
        if not isinstance(value, str):
            return value
        return self._parse(value)


class Choice(click.Choice):
    """click.Choice whose refusal lists the choices without quotes:
    "invalid choice: 'nfs' (choose from mithril-file-share, mithril-block)"."""

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> Any:
        if value in self.choices:
            return value
        raise click.BadParameter(f'invalid choice: {value!r} (choose from '
                                 f'{", ".join(self.choices)})')


def positive_int(text: str) -> int:
    """A whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise click.BadParameter(f'{text!r} is not a whole number >= 1')
    return int(text)


POSITIVE_INT = Parsed('N', positive_int)


def json_option(shape: str) -> Callable[[Any], Any]:
    """`--json`: print `shape` as one JSON document on stdout."""
    return click.option('--json', 'as_json', is_flag=True,
                        help=f'print {shape} as JSON on stdout (progress goes '
                        'to stderr; shapes in docs/ml-commands.md)')


YES = click.option('-y', '--yes', is_flag=True,
                   help='do not ask for confirmation (needed without a terminal)')


def parameter_hint(param: click.Parameter) -> str:
    """How an error names a parameter: `-m/--max-price-per-hour`, `BID`."""
    if isinstance(param, click.Option):
        return '/'.join(param.opts)
    return param.human_readable_name


def command_path(group: click.Group, argv: Sequence[str]) -> str:
    """The command `argv` names under `group` (`sky-mithril instance
    create`), as far as it resolves: what an error's prefix says."""
    names = [group.name or '']
    current: click.Command = group
    context = click.Context(group, info_name=group.name)
    for token in argv:
        if not isinstance(current, click.Group):
            break
        found = current.get_command(context, token)
        if found is None:
            if token.startswith('-'):
                continue
            break
        names.append(found.name or token)
        current = found
    return ' '.join(names)
