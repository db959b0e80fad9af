"""`sky-mithril emulator`: run the local Mithril market emulator until Ctrl-C."""

import argparse
import os
import random
import shlex
import signal
import threading
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from sky_mithril.emulator import default_market
from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator.clock import ScaledClock
from sky_mithril.emulator.hosts import HostBackend
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.server import EmulatorServer, load_catalog

DEFAULT_PORT = 8765
HOST_BACKENDS = ('placeholder', 'namespace', 'local')
# The one API key the emulator accepts, when no --key-file names one. Never
# an option's value: other local users read every process's arguments (`ps`).
ENV_API_KEY = 'SKY_MITHRIL_EMULATOR_API_KEY'


def _price_assignment(text: str) -> Tuple[str, str, str]:
    """Parses TYPE@REGION=PRICE (e.g. h100-80gb.sxm.8x@us-central2-a=$9.50)."""
    target, sep, price = text.partition('=')
    instance_type, at, region = target.partition('@')
    if not (sep and at and instance_type and region and price):
        raise argparse.ArgumentTypeError(
            f'expected TYPE@REGION=PRICE, got {text!r}')
    return instance_type, region, price


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the emulator's options to `parser`."""
    parser.add_argument('--host', default=None,
                        help='address to listen on (default: 127.0.0.1; with '
                        '--hosts namespace, the hosts\' bridge address, and '
                        '127.0.0.1 too: clients here and on the hosts use '
                        'their own 127.0.0.1)')
    parser.add_argument('--port', type=int, default=DEFAULT_PORT,
                        help='port to listen on, 0 for any free one '
                        '(default: %(default)s)')
    parser.add_argument('--speed', type=float, default=60.0,
                        help='emulated seconds per wall second '
                        '(default: %(default)s)')
    parser.add_argument('--clearing-interval', type=float, default=120.0,
                        metavar='SECONDS',
                        help='emulated seconds between auction clearings '
                        '(default: %(default)s)')
    parser.add_argument('--seed', type=int,
                        help='seed for fids, random prices and faults '
                        '(default: a fresh one per run, printed at start, so '
                        'a restarted emulator never reuses an old fid)')
    parser.add_argument('--capacity', type=int,
                        default=market_lib.DEFAULT_CAPACITY,
                        help='instances per auction (default: %(default)s)')
    parser.add_argument('--price', type=_price_assignment, action='append',
                        default=[], metavar='TYPE@REGION=PRICE',
                        help='starting spot price of one auction, e.g. '
                        'h100-80gb.sxm.8x@us-central2-a=$9.50 (repeatable)')
    parser.add_argument('--key-file', metavar='PATH', type=Path,
                        help='accept only the API key in this file (default: '
                        f'the value of ${ENV_API_KEY}; without either, any key)')
    parser.add_argument('--catalog', metavar='PATH',
                        help='market CSV in the catalog\'s columns, Price = auction floor '
                        '(default: the emulator\'s own market, with a week of '
                        'price history)')
    parser.add_argument('--hosts', choices=HOST_BACKENDS, default='placeholder',
                        help='what an allocated instance becomes: '
                        '"placeholder" (an address, nothing listens), '
                        '"namespace" (a real SSH host in a network namespace, '
                        'needs root; what `sky launch` needs), or "local" (an '
                        'sshd on 127.0.0.1, no root, one cluster at a time) '
                        '(default: %(default)s)')


def make_hosts(kind: str, echo: Callable[[str], None] = print) -> HostBackend:
    """The host backend named by `--hosts`."""
    if kind == 'placeholder':
        return PlaceholderHosts()
    if kind == 'namespace':
        from sky_mithril.emulator.hosts.namespace import NamespaceHosts  # pylint: disable=import-outside-toplevel
        return NamespaceHosts(progress=echo)
    from sky_mithril.emulator.hosts.local import LocalPortHosts  # pylint: disable=import-outside-toplevel
    return LocalPortHosts()


def accepted_api_key(args: argparse.Namespace) -> Optional[str]:
    """The one key the emulator accepts: the content of --key-file, else
    ${ENV_API_KEY}; None (any key) without either."""
    if args.key_file is None:
        return os.environ.get(ENV_API_KEY) or None
    key = args.key_file.read_text(encoding='utf-8').strip()
    if not key:
        raise ValueError(f'the key file {args.key_file} is empty')
    return key


def build_server(args: argparse.Namespace,
                 hosts: Optional[HostBackend] = None) -> EmulatorServer:
    """The (not yet started) server the parsed options describe; fills in
    `args.seed` when it was not given."""
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    hosts = hosts or make_hosts(args.hosts)
    market = market_lib.Market(ScaledClock(args.speed),
                               hosts,
                               load_catalog(args.catalog),
                               capacity=args.capacity,
                               clearing_interval_s=args.clearing_interval,
                               seed=args.seed)
    if args.catalog is None:
        default_market.seed_history(market, args.seed)
    market.tick()
    for instance_type, region, price in args.price:
        market.auctions.set_price(instance_type, region, price)
    return EmulatorServer(market,
                          host=args.host or hosts.api_address,
                          port=args.port,
                          api_key=accepted_api_key(args),
                          seed=args.seed)


def _client_key(args: argparse.Namespace) -> str:
    """What a client's MITHRIL_API_KEY is set to: where the accepted key is,
    never the key itself."""
    if args.key_file is not None:
        return f'"$(cat {shlex.quote(str(args.key_file))})"'
    if os.environ.get(ENV_API_KEY):
        return f'"${ENV_API_KEY}"'
    return 'emulator-any-key'


def usage(server: EmulatorServer, args: argparse.Namespace) -> List[str]:
    """What the emulator prints once it listens: where, and what to export."""
    return [
        f'Mithril emulator listening on {server.url} '
        f'({args.speed:g} emulated seconds per second, clearing every '
        f'{args.clearing_interval:g} emulated seconds, seed {args.seed}).',
        'Point SkyPilot (and Mithril\'s `ml`) at it with:',
        f'  export MITHRIL_API_URL={server.url}',
        f'  export MITHRIL_API_KEY={_client_key(args)}',
        f'  export MITHRIL_PROJECT={server.market.accounts.project.fid}',
        'Press Ctrl-C to stop.',
    ]


def run_emulator(args: argparse.Namespace,
                 hosts: Optional[HostBackend] = None,
                 echo: Callable[[str], None] = print) -> int:
    """Runs the emulator until Ctrl-C or SIGTERM; returns the exit code."""
    try:
        server = build_server(args, hosts)
    except (OSError, RuntimeError, ValueError, market_lib.MarketError) as e:
        echo(f'Cannot start the emulator: {e}')
        return 2
    stop = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        previous_sigterm = signal.signal(signal.SIGTERM,
                                         lambda *_: stop.set())
    try:
        try:
            server.start()
        except OSError as e:
            echo(f'Cannot listen on {args.host}:{args.port}: {e}')
            return 2
        for line in usage(server, args):
            echo(line)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_sigterm)
    echo('Mithril emulator stopped.')
    return 0
