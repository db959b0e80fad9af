"""A fresh install against the emulator: the shipped catalog lists no CPU VM
types (Mithril publishes none; which ones a project buys is its own), yet a
CPU-only task and a managed-jobs controller get one at the catalog's first
use, and `sky-mithril setup` gives the plugin-less `sky` client the
project's CPU VM types, which the API server's start keeps."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, List

import pytest
import sky
from sky.skylet import constants

from sky_mithril import cloud
from sky_mithril.catalog import catalog_files

from tests.helpers.live_market import forget_this_process_market

# The emulator's CPU VM types (`emulator.market.cpu_vms.CPU_CATALOG`).
CPU_VM_TYPES = ['c2-highmem', 'c2-standard']


def cpu_vm_types(catalog: Path) -> List[str]:
    """The CPU VM types a catalog file lists (rows without an accelerator)."""
    return sorted({row['InstanceType'] for row in catalog_files.read_rows(catalog)
                   if not row['AcceleratorName']})


def picked(**resources: Any) -> List[str]:
    """The instance types the optimizer's Mithril step offers a one-node task."""
    feasible = cloud.Mithril().get_feasible_launchable_resources(
        sky.Resources(cloud=cloud.Mithril(), **resources), 1)
    return [r.instance_type for r in feasible.resources_list]


@pytest.fixture
def no_market_read_yet() -> Iterator[None]:
    """No market in this process's home, before and after: the emulator's
    CPU VMs would otherwise be the cheapest machines of later tests."""
    forget_this_process_market()
    yield
    forget_this_process_market()


def test_the_first_use_of_a_fresh_catalog_offers_a_cpu_only_task_a_cpu_vm(
        bare_emulator, monkeypatch, no_market_read_yet):
    assert cpu_vm_types(catalog_files.catalog_path()) == []
    monkeypatch.setenv('MITHRIL_API_URL', bare_emulator.url)
    monkeypatch.setenv('MITHRIL_API_KEY', 'fresh-install-key')
    monkeypatch.setenv('MITHRIL_PROJECT', 'proj_emulator')

    assert picked(cpus='4+') == ['c2-standard']
    # A managed-jobs controller's default resources (4+ CPUs, 4x memory).
    assert picked(cpus='4+', memory='4x') == ['c2-standard']
    assert picked(accelerators='A100:1') == ['a100-80gb.sxm.1x']


def run(code: List[str], home: Path, url: str) -> subprocess.CompletedProcess:
    env = {'HOME': str(home), 'PATH': os.environ['PATH'],
           'MITHRIL_API_URL': url, 'MITHRIL_API_KEY': 'fresh-install-key',
           'MITHRIL_PROJECT': 'proj_emulator'}
    result = subprocess.run([sys.executable, *code], env=env, text=True,
                            capture_output=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return result


def test_setup_gives_the_sky_client_the_projects_cpu_vm_types(
        bare_emulator, tmp_path):
    """The client validates a task's `instance_type` against its own copy
    of the catalog: after `sky-mithril setup` it accepts a CPU VM type, and
    it still does once the API server has started (which publishes what the
    plugin serves, not the shipped catalog over it)."""
    client_catalog = catalog_files.skypilot_catalog_file(
        tmp_path / '.sky', constants.CATALOG_SCHEMA_VERSION)

    said = run(['-m', 'sky_mithril.cli', 'setup'], tmp_path,
               bare_emulator.url).stdout
    assert f'CPU VM types {", ".join(CPU_VM_TYPES)}' in said
    assert cpu_vm_types(client_catalog) == CPU_VM_TYPES

    run(['-c', 'from sky_mithril.plugin import takeover; takeover.install()'],
        tmp_path, bare_emulator.url)
    assert cpu_vm_types(client_catalog) == CPU_VM_TYPES
