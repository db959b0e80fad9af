"""`sky-mithril`: set the plugin up, run the local Mithril emulator, maintain the
catalog, Mithril's infrastructure commands (`instance`, `ssh`, `k8s`,
`volumes`) and what the project paid (`spend`)."""

import argparse
import sys
from pathlib import Path
from typing import Callable, List, Optional

from sky_mithril.plugin import setup as setup_lib


def _cmd_setup(args: argparse.Namespace) -> int:
    for remote in ([False, True] if args.remote else [False]):
        path = setup_lib.plugins_config_path(remote=remote)
        added = setup_lib.enable_plugin(path)
        verb = 'Added' if added else 'Already listed:'
        print(f'{verb} {setup_lib.PLUGIN_CLASS} in {path}')
    catalog = setup_lib.publish_catalog(Path.home() / '.sky')
    print(f'Installed the Mithril catalog for the sky client at {catalog}')
    print('Restart the SkyPilot API server so it loads the plugin: '
          '`sky api stop` (the next `sky` command starts it again).')
    print('Then check your Mithril access: `sky check mithril`.')
    return 0


def _cmd_catalog_refresh(args: argparse.Namespace) -> int:
    from sky_mithril.account import connection  # pylint: disable=import-outside-toplevel
    from sky_mithril.catalog import catalog_files  # pylint: disable=import-outside-toplevel
    from sky_mithril.catalog import refresh as catalog_refresh  # pylint: disable=import-outside-toplevel
    conn = connection.connect()
    try:
        rows = catalog_refresh.build_rows(conn.client)
    finally:
        conn.client.close()
    catalog_files.write_rows(rows, args.output)
    print(f'Wrote {len(rows)} rows to {args.output}')
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sky_mithril.devtools import demo  # pylint: disable=import-outside-toplevel
    try:
        return demo.run_demo(keep_files=args.keep_files)
    except demo.DemoError as e:
        print(f'sky-mithril demo: {e}', file=sys.stderr)
        return 1


def _cmd_emulator(args: argparse.Namespace) -> int:
    from sky_mithril.emulator import cli as emulator_cli  # pylint: disable=import-outside-toplevel
    return emulator_cli.run_emulator(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='sky-mithril',
        description='SkyPilot plugin for the Mithril GPU spot market.')
    commands = parser.add_subparsers(dest='command', required=True)

    setup = commands.add_parser(
        'setup', help='list the plugin in ~/.sky/plugins.yaml')
    setup.add_argument('--remote',
                       action='store_true',
                       help='also list it in ~/.sky/remote_plugins.yaml '
                       '(managed-jobs controllers on another cloud)')
    setup.set_defaults(handler=_cmd_setup)

    demo = commands.add_parser(
        'demo',
        help='launch examples/hello.yaml with `sky launch --infra mithril` '
        'on a local Mithril market, then tear everything down')
    demo.add_argument('--keep-files',
                      action='store_true',
                      help='keep the sandboxed SkyPilot home (logs) afterwards')
    demo.set_defaults(handler=_cmd_demo)

    emulator = commands.add_parser(
        'emulator', help='run a local Mithril API and auction market')
    from sky_mithril.emulator import cli as emulator_cli  # pylint: disable=import-outside-toplevel
    emulator_cli.add_emulator_arguments(emulator)
    emulator.set_defaults(handler=_cmd_emulator)

    catalog = commands.add_parser('catalog', help='maintain the GPU catalog')
    catalog_commands = catalog.add_subparsers(dest='catalog_command',
                                              required=True)
    refresh = catalog_commands.add_parser(
        'refresh', help='rebuild the catalog CSV from the Mithril API')
    refresh.add_argument('--output',
                         type=Path,
                         default=Path('catalog/vms.csv'),
                         help='CSV to write (default: catalog/vms.csv)')
    refresh.set_defaults(handler=_cmd_catalog_refresh)

    from sky_mithril.catalog import price_history  # pylint: disable=import-outside-toplevel
    price_history.add_prices_parser(commands)

    from sky_mithril import commands as infrastructure  # pylint: disable=import-outside-toplevel
    infrastructure.add_parsers(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # pylint: disable=broad-except
        from sky_mithril.account import credentials  # pylint: disable=import-outside-toplevel
        from sky_mithril.api import errors  # pylint: disable=import-outside-toplevel
        from sky_mithril.commands import output  # pylint: disable=import-outside-toplevel
        from sky_mithril.provision import budget  # pylint: disable=import-outside-toplevel
        if isinstance(e, (credentials.CredentialsError, errors.MithrilAPIError,
                          output.CommandError, budget.BudgetExceededError,
                          ValueError, OSError)):
            print(f'sky-mithril: {e}', file=sys.stderr)
            return 1
        raise


if __name__ == '__main__':
    sys.exit(main())
