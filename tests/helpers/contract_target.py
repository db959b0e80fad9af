"""Where the contract tests run: the emulator on 127.0.0.1, or any endpoint.

Without `MITHRIL_CONTRACT_URL` the contract scenario runs against an emulator
on a manual clock. With it (and `MITHRIL_CONTRACT_API_KEY`) it runs against
that endpoint, read-only unless `MITHRIL_CONTRACT_PLACE_BID=1`, which places
one bid at the auction's minimum price and cancels it within a minute.
`MITHRIL_CONTRACT_PROJECT` picks the project (default: the key's first).
The key is never printed: it is kept out of every repr and message.
"""

import dataclasses
from typing import Mapping, Optional

from sky_mithril.emulator.clock import ManualClock
from sky_mithril.emulator.hosts.placeholder import PlaceholderHosts
from sky_mithril.emulator.market import Market
from sky_mithril.emulator.server import EmulatorServer, load_catalog

URL_ENV = 'MITHRIL_CONTRACT_URL'
API_KEY_ENV = 'MITHRIL_CONTRACT_API_KEY'
PLACE_BID_ENV = 'MITHRIL_CONTRACT_PLACE_BID'
PROJECT_ENV = 'MITHRIL_CONTRACT_PROJECT'
EMULATOR_API_KEY = 'contract-test-key'


@dataclasses.dataclass(frozen=True)
class ContractTarget:
    """The endpoint under contract. `emulator` is set when it is ours (then
    it may be changed at will and its clock advanced); otherwise only reads
    are sent, and one minimum-price bid if `place_bid`."""

    url: str
    api_key: str = dataclasses.field(repr=False)
    emulator: Optional[EmulatorServer] = None
    place_bid: bool = False
    project: Optional[str] = None

    @property
    def writable(self) -> bool:
        """Whether the scenario may create and delete what it likes."""
        return self.emulator is not None


def contract_emulator() -> EmulatorServer:
    """An emulator on a manual clock that accepts only EMULATOR_API_KEY, not
    started."""
    market = Market(ManualClock(), PlaceholderHosts(), load_catalog())
    return EmulatorServer(market, api_key=EMULATOR_API_KEY)


def endpoint_from(environ: Mapping[str, str]) -> Optional[ContractTarget]:
    """The endpoint `environ` names (None: none, use the emulator).

    Raises ValueError when it names a URL without a key."""
    url = environ.get(URL_ENV, '').strip()
    if not url:
        return None
    api_key = environ.get(API_KEY_ENV, '').strip()
    if not api_key:
        raise ValueError(f'{URL_ENV} is set but {API_KEY_ENV} is not')
    return ContractTarget(url=url.rstrip('/'), api_key=api_key,
                          place_bid=environ.get(PLACE_BID_ENV) == '1',
                          project=environ.get(PROJECT_ENV, '').strip() or None)


def emulator_target(server: EmulatorServer,
                    environ: Mapping[str, str]) -> ContractTarget:
    """A started contract emulator as the target; it may take one bid."""
    return ContractTarget(url=server.url, api_key=EMULATOR_API_KEY,
                          emulator=server, place_bid=True,
                          project=environ.get(PROJECT_ENV, '').strip() or None)
