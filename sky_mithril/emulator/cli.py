"""`sky-mithril emulator`: run the local Mithril market emulator until Ctrl-C."""

import dataclasses
import os
import random
import shlex
import signal
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import click

from sky_mithril.emulator import default_market
from sky_mithril.emulator import market as market_lib
from sky_mithril.emulator.clock import ScaledClock
from sky_mithril.emulator.hosts import HostBackend
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.server import EmulatorServer, load_catalog

DEFAULT_PORT = 8765
HOST_BACKENDS = ('placeholder', 'namespace', 'local')
# What each host backend means for a user, printed once the emulator listens.
HOSTS_NOTES = {
    'placeholder': ('Hosts are placeholders: the API answers, but nothing '
                    'listens at an instance\'s address, so `sky launch` cannot '
                    'reach its nodes. For launches, run `sudo sky-mithril '
                    'emulator --hosts namespace` (root: real SSH hosts).'),
    'namespace': ('Hosts are real SSH hosts in network namespaces: '
                  '`sky launch --infra mithril` works.'),
    'local': ('Hosts are one sshd on 127.0.0.1: one cluster at a time; '
              '`sudo sky-mithril emulator --hosts namespace` has no limit.'),
}
# The one API key the emulator accepts, when no --key-file names one. Never
# an option's value: other local users read every process's arguments (`ps`).
ENV_API_KEY = 'SKY_MITHRIL_EMULATOR_API_KEY'


PriceAssignment = Tuple[str, str, str]


@dataclasses.dataclass
class EmulatorOptions:
    """What `sky-mithril emulator`'s options say (see the command's help)."""

    host: Optional[str] = None
    port: int = DEFAULT_PORT
    speed: float = 60.0
    clearing_interval: float = 120.0
    seed: Optional[int] = None
    capacity: int = market_lib.DEFAULT_CAPACITY
    price: Tuple[PriceAssignment, ...] = ()
    key_file: Optional[Path] = None
    catalog: Optional[str] = None
    hosts: str = 'placeholder'


class _PriceAssignment(click.ParamType):
    """TYPE@REGION=PRICE (e.g. h100-80gb.sxm.8x@us-central2-a=$9.50)."""

    name = 'TYPE@REGION=PRICE'

    def convert(self, value: Any, param: Optional[click.Parameter],
                ctx: Optional[click.Context]) -> PriceAssignment:
        if isinstance(value, tuple):
            return value
        target, sep, price = str(value).partition('=')
        instance_type, at, region = target.partition('@')
        if not (sep and at and instance_type and region and price):
            self.fail(f'expected TYPE@REGION=PRICE, got {value!r}', param, ctx)
        return instance_type, region, price


@click.command('emulator', epilog="""\b
Examples:
  sky-mithril emulator                          # the API only: placeholder hosts
  sudo sky-mithril emulator --hosts namespace   # real SSH hosts: what `sky launch` needs
  sky-mithril emulator --port 0 --price 'h100-80gb.sxm.8x@us-central2-a=$9.50'""")
@click.option('--host', default=None,
              help='address to listen on (default: 127.0.0.1; with --hosts '
              'namespace, the hosts\' bridge address, and 127.0.0.1 too: '
              'clients here and on the hosts use their own 127.0.0.1)')
@click.option('--port', type=int, default=DEFAULT_PORT, show_default=True,
              help='port to listen on, 0 for any free one')
@click.option('--speed', type=float, default=EmulatorOptions.speed,
              show_default=True, help='emulated seconds per wall second')
@click.option('--clearing-interval', type=float,
              default=EmulatorOptions.clearing_interval, show_default=True,
              metavar='SECONDS',
              help='emulated seconds between auction clearings')
@click.option('--seed', type=int,
              help='seed for fids, random prices and faults (default: a fresh '
              'one per run, printed at start, so a restarted emulator never '
              'reuses an old fid)')
@click.option('--capacity', type=int, default=market_lib.DEFAULT_CAPACITY,
              show_default=True, help='instances per auction')
@click.option('--price', type=_PriceAssignment(), multiple=True,
              help='starting spot price of one auction, e.g. '
              'h100-80gb.sxm.8x@us-central2-a=$9.50 (repeatable)')
@click.option('--key-file', type=click.Path(dir_okay=False, path_type=Path),
              metavar='PATH',
              help='accept only the API key in this file (default: the value '
              f'of ${ENV_API_KEY}; without either, any key)')
@click.option('--catalog', metavar='PATH',
              help='market CSV in the catalog\'s columns, Price = auction floor '
              '(default: the emulator\'s own market, with a week of price '
              'history)')
@click.option('--hosts', type=click.Choice(HOST_BACKENDS),
              default=EmulatorOptions.hosts, show_default=True,
              help='what an allocated instance becomes: "placeholder" (an '
              'address, nothing listens: the API only), "namespace" (a real '
              'SSH host in a network namespace, needs root; what `sky launch` '
              'needs), or "local" (an sshd on 127.0.0.1, no root, one cluster '
              'at a time)')
def command(**options: Any) -> int:
    """Run a local Mithril API and auction market until Ctrl-C. It prints
    the variables that point SkyPilot (and `ml`) at it."""
    return run_emulator(EmulatorOptions(**options))


def make_hosts(kind: str, echo: Callable[[str], None] = print) -> HostBackend:
    """The host backend named by `--hosts`."""
    if kind == 'placeholder':
        return PlaceholderHosts()
    if kind == 'namespace':
        from sky_mithril.emulator.hosts.namespace import NamespaceHosts  # pylint: disable=import-outside-toplevel
        return NamespaceHosts(progress=echo)
    from sky_mithril.emulator.hosts.local import LocalPortHosts  # pylint: disable=import-outside-toplevel
    return LocalPortHosts()


def accepted_api_key(options: EmulatorOptions) -> Optional[str]:
    """The one key the emulator accepts: the content of --key-file, else
    ${ENV_API_KEY}; None (any key) without either."""
    if options.key_file is None:
        return os.environ.get(ENV_API_KEY) or None
    key = options.key_file.read_text(encoding='utf-8').strip()
    if not key:
        raise ValueError(f'the key file {options.key_file} is empty')
    return key


def build_server(options: EmulatorOptions,
                 hosts: Optional[HostBackend] = None) -> EmulatorServer:
    """The (not yet started) server the parsed options describe; fills in
    `options.seed` when it was not given."""
    if options.seed is None:
        options.seed = random.SystemRandom().randrange(2**31)
    hosts = hosts or make_hosts(options.hosts)
    market = market_lib.Market(ScaledClock(options.speed),
                               hosts,
                               load_catalog(options.catalog),
                               capacity=options.capacity,
                               clearing_interval_s=options.clearing_interval,
                               seed=options.seed)
    if options.catalog is None:
        default_market.seed_history(market, options.seed)
    market.tick()
    for instance_type, region, price in options.price:
        market.auctions.set_price(instance_type, region, price)
    return EmulatorServer(market,
                          host=options.host or hosts.api_address,
                          port=options.port,
                          api_key=accepted_api_key(options),
                          seed=options.seed)


def _client_key(options: EmulatorOptions) -> str:
    """What a client's MITHRIL_API_KEY is set to: where the accepted key is,
    never the key itself."""
    if options.key_file is not None:
        return f'"$(cat {shlex.quote(str(options.key_file))})"'
    if os.environ.get(ENV_API_KEY):
        return f'"${ENV_API_KEY}"'
    return 'emulator-any-key'


def usage(server: EmulatorServer, options: EmulatorOptions) -> List[str]:
    """What the emulator prints once it listens: where, and what to export."""
    return [
        f'Mithril emulator listening on {server.url} '
        f'({options.speed:g} emulated seconds per second, clearing every '
        f'{options.clearing_interval:g} emulated seconds, seed {options.seed}).',
        'Point SkyPilot (and Mithril\'s `ml`) at it: in the shell that runs '
        '`sky`,',
        f'  export MITHRIL_API_URL={server.url}',
        f'  export MITHRIL_API_KEY={_client_key(options)}',
        f'  export MITHRIL_PROJECT={server.market.accounts.project.fid}',
        'then `sky api stop`: the SkyPilot API server keeps the environment it '
        'started with, and the next `sky` command starts one with these.',
        HOSTS_NOTES[options.hosts],
        'Press Ctrl-C to stop.',
    ]


def run_emulator(options: EmulatorOptions,
                 hosts: Optional[HostBackend] = None,
                 echo: Callable[[str], None] = print) -> int:
    """Runs the emulator until Ctrl-C or SIGTERM; returns the exit code."""
    try:
        server = build_server(options, hosts)
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
            echo(f'Cannot listen on {options.host}:{options.port}: {e}')
            return 2
        for line in usage(server, options):
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
