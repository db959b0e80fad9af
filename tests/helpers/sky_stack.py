"""What the end-to-end tests drive: the emulator with namespace hosts and a
sandboxed SkyPilot that talks to it."""

from typing import Any, Dict, List

from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.emulator.hosts.namespace import NamespaceHosts
from sky_mithril.emulator.server import EmulatorServer


class SkyStack:
    """`sky` commands that must succeed, and the market as the emulator sees it."""

    def __init__(self, emulator: EmulatorServer, box: SkySandbox,
                 hosts: NamespaceHosts) -> None:
        self.emulator = emulator
        self.box = box
        self.hosts = hosts

    def sky(self, *args: str, timeout: float = 600) -> str:
        result = self.box.sky(list(args), timeout=timeout)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f'sky {" ".join(args)} failed:\n{output}'
        return output

    def control(self, method: str, path: str, **body: Any) -> Dict:
        return self.emulator.control(method, path, **body) or {}

    def bids(self, name_prefix: str = '') -> List[Dict]:
        return [b for b in self.control('GET', 'state')['bids']
                if b['name'].startswith(name_prefix)]

    def live_bids(self, name_prefix: str = '') -> List[Dict]:
        return [b for b in self.bids(name_prefix) if b['status'] != 'Terminated']
