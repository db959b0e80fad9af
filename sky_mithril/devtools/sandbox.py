"""An isolated SkyPilot home wired to a Mithril API (usually the emulator).

Used by `sky-mithril demo` and the end-to-end tests: a private HOME with the
plugin enabled, Mithril credentials pointing at the given API, SkyPilot's
common catalogs seeded (SkyPilot would otherwise download them), its
network probe pointed at loopback, its check for a newer SkyPilot release
answered from a seeded cache (it would ask pypi.org), usage reporting off,
and an API server on its own port so it never meets the user's own server.
"""

import ast
import csv
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from sky_mithril import skypilot_names
from sky_mithril.catalog import catalog_files
from sky_mithril.emulator.hosts import network_probe, vm_image
from sky_mithril.plugin import setup as setup_lib

ENV_ACCELERATORS_CSV = 'SKY_MITHRIL_ACCELERATORS_CSV'

# SkyPilot's API server asks pypi.org for its latest release unless its
# version cache is younger than a day; stamped this far ahead (2100-01-01),
# the seeded cache stays valid for the sandbox's whole life.
_VERSION_CACHE_STAMP = 4102444800.0


# The memory SkyPilot sizes the sandbox's API server's pools for (its own knob
# for servers not in a container). Sized for this 23 GB machine, a
# consolidation-mode server keeps 11 idle jobs controllers polling (16 CPU-s a
# minute); at 8 GB one (4 CPU-s), room for 6 services, and no low-memory warning.
_SERVER_MEMORY_GB = '8'

# Ports handed out below the kernel's ephemeral range (its default low end).
_LOWEST_PORT = 20000
_EPHEMERAL_RANGE = Path('/proc/sys/net/ipv4/ip_local_port_range')


def _queue_manager_port(api_port: int) -> int:
    """The port SkyPilot's API server on `api_port` gives its request queue
    manager (`mp_queue.get_queue_manager_port`: the default queue port moved
    by the API port's offset, kept within 50000-59999)."""
    from sky.server import common as server_common  # pylint: disable=import-outside-toplevel
    from sky.server.requests.queues import mp_queue  # pylint: disable=import-outside-toplevel
    offset = api_port - server_common.DEFAULT_SERVER_PORT
    return 50000 + (mp_queue.DEFAULT_QUEUE_MANAGER_PORT - 50000 + offset) % 10000


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server that binds it later (the
    sandbox's API server starts on first use, and again after a restart).
    It is below the kernel's ephemeral range, where outgoing connections and
    port-0 listeners would take it meanwhile. The server's request queue
    manager takes a port SkyPilot derives from it, which falls in that range
    and refuses the start when taken: it is free too, when chosen."""
    try:
        ephemeral_low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    candidates = list(range(_LOWEST_PORT, max(_LOWEST_PORT + 1, ephemeral_low)))
    random.shuffle(candidates)
    for port in candidates:
        if _bindable(port) and _bindable(_queue_manager_port(port)):
            return port
    raise OSError(f'no free TCP port on 127.0.0.1 from {_LOWEST_PORT} to {ephemeral_low - 1}')


def _write_common_catalogs(catalog_dir: Path) -> None:
    """accelerators.csv (a given copy, or one made from our catalog) and
    metadata.csv (GPU memory, from our catalog's GpuInfo)."""
    catalog_dir.mkdir(parents=True, exist_ok=True)
    rows = catalog_files.read_rows(catalog_files.catalog_path())
    given = os.environ.get(ENV_ACCELERATORS_CSV)
    if given:
        shutil.copyfile(given, catalog_dir / 'accelerators.csv')
    else:
        with (catalog_dir / 'accelerators.csv').open('w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['AcceleratorName', 'Clouds'])
            for name in sorted({r['AcceleratorName'] for r in rows}):
                writer.writerow([name, "['Mithril']"])
    memory: Dict[str, float] = {}
    for row in rows:
        for gpu in ast.literal_eval(row['GpuInfo']).get('Gpus', []):
            memory[gpu['Name']] = gpu['MemoryInfo']['SizeInMiB'] / 1024
    with (catalog_dir / 'metadata.csv').open('w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['GPU', 'MemoryGB', 'Manufacturer'])
        for name, gb in sorted(memory.items()):
            writer.writerow([name, gb, 'NVIDIA'])


def _seed_version_cache(sky_dir: Path) -> None:
    """SkyPilot's release check answered offline: the latest release is the
    installed one (so no upgrade notice either)."""
    import sky  # pylint: disable=import-outside-toplevel
    from sky.server import version_check  # pylint: disable=import-outside-toplevel
    (sky_dir / version_check.VERSION_CACHE_FILE.name).write_text(json.dumps({
        'release_version': sky.__version__,
        'cached_at': _VERSION_CACHE_STAMP,
    }))


# What SkyPilot's own client runs for any launch, dry runs included.
SKYPILOT_CLIENT_PACKAGES = ('rsync', 'openssh-client')


class SkySandbox:
    """A private SkyPilot home; `run()` executes `sky` commands inside it.

    Installs the Debian packages SkyPilot's client needs on a fresh machine
    (as root; otherwise the error names the apt command). Mithril credentials
    go into an `ml setup` profile, or with `credentials_in_environment` only
    into the `MITHRIL_*` variables the API server starts with. Refuses to
    start (PluginCompatibilityError) on a SkyPilot that lacks a name
    sky-mithril or its dev tools rely on."""

    def __init__(self,
                 root: Path,
                 *,
                 api_url: str,
                 api_key: str,
                 project_id: Optional[str] = None,
                 sky_config: Optional[Dict] = None,
                 extra_env: Optional[Dict[str, str]] = None,
                 credentials_in_environment: bool = False) -> None:
        skypilot_names.require(skypilot_names.ALL_SIDES)
        vm_image.ensure_packages(SKYPILOT_CLIENT_PACKAGES,
                                 lambda line: print(line, flush=True))
        self.root = root
        self.home = root / 'home'
        self.api_port = free_port()
        hooks = root / 'pyhooks'
        hooks.mkdir(parents=True, exist_ok=True)
        (hooks / 'sitecustomize.py').write_text(network_probe.sitecustomize_for(
            [f'http://127.0.0.1:{self.api_port}'], written_by='its sandbox'))
        from sky.skylet import constants  # pylint: disable=import-outside-toplevel
        sky_dir = self.home / '.sky'
        _write_common_catalogs(sky_dir / 'catalogs' /
                               constants.CATALOG_SCHEMA_VERSION / 'common')
        _seed_version_cache(sky_dir)
        setup_lib.enable_plugin(sky_dir / 'plugins.yaml')
        setup_lib.publish_catalog(sky_dir)
        config = {'allowed_clouds': ['mithril'], **(sky_config or {})}
        (sky_dir / 'config.yaml').write_text(yaml.safe_dump(config))
        profile = {'api_key': api_key, 'api_url': api_url}
        if project_id:
            profile['project_id'] = project_id
        if credentials_in_environment:
            extra_env = {'MITHRIL_API_KEY': api_key, 'MITHRIL_API_URL': api_url,
                         **({'MITHRIL_PROJECT': project_id} if project_id else {}),
                         **(extra_env or {})}
        else:
            mithril_config = self.home / '.config' / 'mithril' / 'config.yaml'
            mithril_config.parent.mkdir(parents=True, exist_ok=True)
            mithril_config.write_text(
                yaml.safe_dump({
                    'current_profile': 'default',
                    'profiles': {
                        'default': profile
                    }
                }))
            mithril_config.chmod(0o600)
        self.env = self._environment(hooks, extra_env or {})

    def _environment(self, hooks: Path, extra: Dict[str, str]) -> Dict[str, str]:
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(('MITHRIL_', 'SKYPILOT_', 'XDG_'))
        }
        python_path = [str(hooks)] + ([env['PYTHONPATH']]
                                      if env.get('PYTHONPATH') else [])
        env.update({
            'HOME': str(self.home),
            'PYTHONPATH': os.pathsep.join(python_path),
            'SKYPILOT_API_SERVER_LOCAL_PORT': str(self.api_port),
            'SKYPILOT_DISABLE_USAGE_COLLECTION': '1',
            'SKYPILOT_POD_MEMORY_GB_LIMIT': _SERVER_MEMORY_GB,
            'PATH': f'{Path(sys.executable).parent}{os.pathsep}{env.get("PATH", "")}',
        })
        env.update(extra)
        return env

    def sky(self, args: List[str], *, timeout: float = 600,
            check: bool = False, stream: bool = False,
            typed: Optional[str] = None) -> subprocess.CompletedProcess:
        """Runs `sky ARGS` in the sandbox; output is captured as text, or
        passed through to our stdout/stderr when `stream`; `typed` is what
        a user types at its prompts (none by default)."""
        sky_bin = str(Path(sys.executable).parent / 'sky')
        return subprocess.run([sky_bin, *args],
                              env=self.env,
                              cwd=str(self.root),
                              capture_output=not stream,
                              text=True,
                              timeout=timeout,
                              check=check,
                              **({'input': typed} if typed is not None else
                                 {'stdin': subprocess.DEVNULL}))

    def stop_api_server(self) -> None:
        """Stops the sandbox's API server (and with it its workers)."""
        self.sky(['api', 'stop'], timeout=120)
