"""What every infrastructure command prints: money, tables, JSON, progress,
and the prompts that must never block a script."""

import datetime
import json
import sys
from decimal import Decimal
from typing import Any, List, Optional, Sequence, Tuple

from sky_mithril import money


class CommandError(Exception):
    """A command cannot go on; the message says why and what to do instead."""


def per_hour(amount: Optional[Decimal]) -> str:
    """A price per instance-hour, the one way every command prints money: "$8.00/h"."""
    return '-' if amount is None else f'{money.format_dollars(amount)}/h'


def dollars(amount: Optional[Decimal]) -> Optional[str]:
    """A price for JSON output: "$8.00", as Mithril's API writes it."""
    return None if amount is None else money.format_dollars(amount)


def short_status(status: str) -> str:
    """`STATUS_RUNNING` -> `Running`; bid and cluster statuses unchanged."""
    return status.removeprefix('STATUS_').capitalize() if status.startswith(
        'STATUS_') else status


def age(created_at: datetime.datetime) -> str:
    """How long ago, coarsely: 45s, 12m, 3h, 2d."""
    seconds = max(0, int((datetime.datetime.now(datetime.timezone.utc) -
                          created_at).total_seconds()))
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size:
            return f'{seconds // size}{unit}'
    return f'{seconds}s'


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(cell)) for cell in column)
              for column in zip(headers, *rows)]
    for line in [headers, *rows]:
        print('  '.join(str(cell).ljust(width)
                        for cell, width in zip(line, widths)).rstrip())


def progress(message: str) -> None:
    """A progress line on stderr, so `--json` output on stdout stays parseable."""
    print(message, file=sys.stderr, flush=True)


def interactive() -> bool:
    """Whether a person can answer a prompt (stdin and stdout are terminals)."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def pick(what: str, choices: List[Tuple[str, str]], argument: str) -> str:
    """Lets a person choose one of `choices` (value, description) on a
    terminal; elsewhere fails at once, naming the missing `argument`."""
    if not interactive():
        raise CommandError(f'Name the {what}: {argument} is required when not '
                           'running in a terminal.')
    if not choices:
        raise CommandError(f'There is no {what} to choose from.')
    for number, (_, description) in enumerate(choices, start=1):
        print(f'  {number}) {description}')
    while True:
        answer = input(f'Which {what}? [1-{len(choices)}] ').strip()
        if answer.isdigit() and 1 <= int(answer) <= len(choices):
            return choices[int(answer) - 1][0]


def confirm(question: str, assume_yes: bool) -> bool:
    """True when `assume_yes` (-y) or a person answers yes; without a
    terminal and without -y, fails instead of waiting for an answer."""
    if assume_yes:
        return True
    if not interactive():
        raise CommandError(f'{question} Pass -y to confirm when not running '
                           'in a terminal.')
    return input(f'{question} [y/N] ').strip().lower() in ('y', 'yes')
