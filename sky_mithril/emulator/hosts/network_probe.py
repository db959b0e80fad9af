"""SkyPilot's network probe, answered where the internet is out of reach.

SkyPilot probes https://8.8.8.8 and https://1.1.1.1 before a managed job's
status checks and waits while neither answers. A `sitecustomize` module
points the probe elsewhere: the sandboxed SkyPilot's at its own API server,
the emulator's hosts' (a remote controller) at the emulator's PROBE_PATH,
through their loopback forward, named in PROBE_FILE on each host.
"""

from pathlib import Path
from typing import List

# The emulator's answer to the hosts' probe (200 to GET and HEAD).
PROBE_PATH = '/_emulator/network-probe'
# Where a host keeps its probe URLs, one per line (in its own /etc).
PROBE_FILE = Path('/etc/sky-mithril/network-probe')

_SITECUSTOMIZE = '''"""Written by sky-mithril ({written_by}): SkyPilot's network probe."""
import importlib.abc
import sys

_TARGET = 'sky.backends.backend_utils'


class _RedirectedProbe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            urls = {probe_urls}
            if urls:
                module._TEST_IP_LIST = urls

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _RedirectedProbe())
'''


def sitecustomize_for(urls: List[str], *, written_by: str) -> str:
    """A sitecustomize that sends SkyPilot's probe to `urls`."""
    return _SITECUSTOMIZE.format(written_by=written_by, probe_urls=repr(urls))


def sitecustomize_from_probe_file(*, written_by: str) -> str:
    """A sitecustomize that sends SkyPilot's probe to the URLs in
    PROBE_FILE, and leaves it alone where there is no such file."""
    read = (f"(open({str(PROBE_FILE)!r}).read().split() if "
            f"__import__('os').path.isfile({str(PROBE_FILE)!r}) else [])")
    return _SITECUSTOMIZE.format(written_by=written_by, probe_urls=read)
