"""`sky-mithril`: set the plugin up, run the local Mithril emulator, maintain the
catalog, spot prices, Mithril's infrastructure commands (`instance`, `ssh`,
`k8s`, `volumes`) and what the project paid (`spend`). A click CLI, like
SkyPilot's `sky`; every error is one line `sky-mithril CMD: message`."""

import sys
from pathlib import Path
from typing import List, Optional, Sequence

import click

from sky_mithril import __version__
from sky_mithril import commands
from sky_mithril.account import credentials
from sky_mithril.api import errors
from sky_mithril.catalog import price_history
from sky_mithril.commands import options
from sky_mithril.commands import output as output_lib
from sky_mithril.commands import setup
from sky_mithril.emulator import cli as emulator_cli
from sky_mithril.provision import budget

# Errors whose message says what went wrong and what to do: printed as one
# line, exit 1. Anything else is a bug and keeps its traceback.
EXPECTED_ERRORS = (credentials.CredentialsError, errors.MithrilAPIError,
                   output_lib.CommandError, budget.BudgetExceededError,
                   price_history.PricesError, ValueError, OSError)


@click.group('sky-mithril', cls=options.Group,
             context_settings=options.CONTEXT_SETTINGS,
             epilog=options.examples(
                 'sky-mithril setup --api-key       # enable the plugin, store your key',
                 'sky check mithril                 # then check your Mithril access',
                 'sky-mithril prices H100:8         # what a limit price would have won',
                 'sky-mithril demo                  # a real launch on a local market (root)'))
@click.version_option(__version__, '--version', prog_name='sky-mithril',
                      message='%(prog)s %(version)s')
def cli() -> None:
    """The SkyPilot plugin for the Mithril GPU spot market: setup, the local
    emulator, prices, and Mithril's own infrastructure commands."""


cli.add_command(setup.setup_command)


@cli.command('demo', short_help='A real sky launch on a local market (root).',
             epilog=options.examples(
    'sudo sky-mithril demo',
    'sudo sky-mithril demo --keep-files'))
@click.option('--keep-files', is_flag=True,
              help='keep the sandboxed SkyPilot home (logs) afterwards')
def demo(keep_files: bool) -> int:
    """Launch examples/hello.yaml with `sky launch --infra mithril` on a
    local Mithril market, then tear everything down. Needs root; installs
    the Debian packages it needs on first use."""
    from sky_mithril.devtools import demo as demo_lib  # pylint: disable=import-outside-toplevel
    try:
        return demo_lib.run_demo(keep_files=keep_files)
    except demo_lib.DemoError as e:
        raise output_lib.CommandError(str(e)) from e


cli.add_command(emulator_cli.command)


@cli.group('catalog', cls=options.Group)
def catalog() -> None:
    """Maintain the GPU catalog."""


@catalog.command('refresh', short_help='Rebuild the catalog CSV from the API.',
                  epilog=options.examples(
    'sky-mithril catalog refresh                    # in a checkout: catalog/vms.csv',
    'sky-mithril catalog refresh --output ~/vms.csv'))
@click.option('--output', type=click.Path(dir_okay=False, path_type=Path),
              help='CSV to write (default: the file $SKY_MITHRIL_CATALOG '
              'names, else, in a checkout, its catalog/vms.csv; an installed '
              'wheel needs --output)')
def refresh_catalog(output: Optional[Path]) -> int:
    """Rebuild the catalog CSV from the Mithril API: every auction, priced at
    its recent median spot price."""
    from sky_mithril.account import connection  # pylint: disable=import-outside-toplevel
    from sky_mithril.catalog import catalog_files  # pylint: disable=import-outside-toplevel
    from sky_mithril.catalog import refresh as catalog_refresh  # pylint: disable=import-outside-toplevel
    target = output or catalog_files.refresh_target()
    if target is None:
        raise output_lib.CommandError(
            'Name the file to write with --output PATH: an installed '
            'sky-mithril keeps its catalog inside the wheel. To use the new '
            f'file, set {catalog_files.ENV_CATALOG}=PATH where the SkyPilot '
            'API server starts, then `sky api stop`.')
    conn = connection.connect(retry_refused=False)
    try:
        rows = catalog_refresh.build_rows(conn.client)
    finally:
        conn.client.close()
    catalog_files.write_rows(rows, target)
    print(f'Wrote {len(rows)} rows to {target.resolve()}')
    return 0


commands.add_commands(cli)


def _usage_error(error: click.UsageError, path: str) -> str:
    """A usage error in the one error format, naming the option as
    `-m/--max-price-per-hour`, and where the help is."""
    if isinstance(error, click.BadParameter) and error.param is not None:
        error.param_hint = options.parameter_hint(error.param)
    where = error.ctx.command_path if error.ctx else path
    return (f'{where}: {error.format_message()}\n'
            f'Try `{where} --help` for its options and examples.')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs `sky-mithril ARGV` and returns its exit status: 0, 1 for an error
    (one line, `sky-mithril CMD: message`), 2 for a usage error, 130 for
    Ctrl-C."""
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    path = options.command_path(cli, args)
    try:
        status = cli.main(args, prog_name='sky-mithril', standalone_mode=False)
    except click.UsageError as e:
        print(_usage_error(e, path), file=sys.stderr)
        return e.exit_code
    except click.ClickException as e:
        print(f'{path}: {e.format_message()}', file=sys.stderr)
        return e.exit_code
    except (click.Abort, KeyboardInterrupt):
        return 130
    except EXPECTED_ERRORS as e:
        print(f'{path}: {e}', file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0


if __name__ == '__main__':
    sys.exit(main())
