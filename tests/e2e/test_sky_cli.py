"""Real `sky` CLI runs (API server on 127.0.0.1, private HOME) against the
emulator: the plugin taking over `mithril` is proven by what users see."""

from pathlib import Path
from typing import Iterator

import pytest
import yaml

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module')
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture(scope='module')
def sandbox(emulator, tmp_path_factory) -> Iterator[SkySandbox]:
    box = SkySandbox(tmp_path_factory.mktemp('sky'),
                     api_url=emulator.url,
                     api_key='test-key-cli')
    try:
        assert box.sky(['check', 'mithril']).returncode == 0
        yield box
    finally:
        box.stop_api_server()


def write_task(box: SkySandbox, name: str, resources: dict,
               mithril: dict = None) -> Path:
    task = {'resources': {'infra': 'mithril', **resources}, 'run': 'echo hi'}
    if mithril is not None:
        task['config'] = {'mithril': mithril}
    path = box.root / f'{name}.yaml'
    path.write_text(yaml.safe_dump(task))
    return path


def dryrun(box: SkySandbox, path: Path, *extra: str):
    result = box.sky(['launch', '--dryrun', '-y', str(path), *extra])
    return result, result.stdout + result.stderr


def test_dryrun_shows_our_catalog_row_and_number_limit(sandbox):
    result, out = dryrun(sandbox, write_task(sandbox, 'num', {'accelerators': 'H100:8'},
                                             {'limit_price': 24.5}))
    assert result.returncode == 0, out
    assert 'h100-80gb.sxm.8x' in out and 'us-central2-a' in out
    assert 'Mithril limit price: $24.50/h per instance (limit_price in config.mithril)' in out


def test_dryrun_dollar_string_limit(sandbox):
    result, out = dryrun(sandbox, write_task(sandbox, 'dollar', {'accelerators': 'B200:8'},
                                             {'limit_price': '$32.00'}))
    assert result.returncode == 0, out
    assert 'neb-b200.sxm.8x' in out
    assert 'Mithril limit price: $32.00/h' in out


def test_dryrun_per_gpu_limit_multiplies_by_gpus(sandbox):
    result, out = dryrun(sandbox, write_task(sandbox, 'pergpu', {'accelerators': 'A100:4'},
                                             {'limit_price_per_gpu': 1.25}))
    assert result.returncode == 0, out
    assert '$5.00/h per instance (limit_price_per_gpu $1.25 × 4 GPUs' in out


def test_dryrun_without_limit_uses_the_documented_default(sandbox):
    result, out = dryrun(sandbox, write_task(sandbox, 'default', {'accelerators': 'A100:1'}))
    assert result.returncode == 0, out
    assert "$32.00/h per instance (Mithril's default" in out


def test_region_selection(sandbox):
    """(Bad limits, unknown keys, zones and regions without the GPU are
    refused through real launches in test_bad_inputs.py.)"""
    ok, out = dryrun(sandbox, write_task(sandbox, 'region', {
        'infra': 'mithril/us-central3-a', 'accelerators': 'A100:2'}))
    assert ok.returncode == 0, out
    assert 'a100-80gb.sxm.2x' in out and 'us-central3-a' in out


def test_cpu_only_task_gets_the_cheapest_machine(sandbox):
    result, out = dryrun(sandbox, write_task(sandbox, 'cpu', {'cpus': '4+'}))
    assert result.returncode == 0, out
    assert 'a100-80gb.sxm.1x' in out


def test_show_gpus_lists_our_catalog(sandbox):
    listing = sandbox.sky(['show-gpus', '--infra', 'mithril'])
    assert listing.returncode == 0, listing.stderr
    for gpu in ('A100', 'B200', 'H100', 'H200'):
        assert gpu in listing.stdout
    b200 = sandbox.sky(['show-gpus', 'B200', '--infra', 'mithril'])
    assert b200.returncode == 0, b200.stderr
    assert 'neb-b200.sxm.8x' in b200.stdout and 'us-central5-a' in b200.stdout


def _profile(box: SkySandbox, **fields) -> None:
    path = box.home / '.config' / 'mithril' / 'config.yaml'
    data = yaml.safe_load(path.read_text())
    data['profiles']['default'].update(fields)
    path.write_text(yaml.safe_dump(data))


def test_check_reports_the_real_reason(sandbox, emulator):
    good = yaml.safe_load((sandbox.home / '.config/mithril/config.yaml').read_text())
    try:
        _profile(sandbox, api_url='http://127.0.0.1:9')
        unreachable = sandbox.sky(['check', 'mithril'])
        assert 'disabled' in unreachable.stdout.lower()
        assert 'unreachable' in unreachable.stdout.lower() or 'connect' in unreachable.stdout.lower()

        _profile(sandbox, api_url=emulator.url, project_id='proj_nope')
        no_project = sandbox.sky(['check', 'mithril'])
        assert "'proj_nope'" in no_project.stdout and 'MITHRIL_PROJECT' in no_project.stdout
    finally:
        (sandbox.home / '.config/mithril/config.yaml').write_text(yaml.safe_dump(good))
    assert 'enabled' in sandbox.sky(['check', 'mithril']).stdout


def test_check_reports_a_rejected_key(sandbox):
    """The module's sandbox with its profile's key swapped for one the API
    rejects (a sandbox of its own cost an API server start, ~45 s)."""
    profile = sandbox.home / '.config/mithril/config.yaml'
    good = profile.read_text()
    with EmulatorServer(api_key='the-right-key') as server:
        try:
            _profile(sandbox, api_url=server.url, api_key='a-wrong-key-123')
            result = sandbox.sky(['check', 'mithril'])
        finally:
            profile.write_text(good)
            restored = sandbox.sky(['check', 'mithril'])
    assert 'disabled' in result.stdout.lower()
    assert '401' in result.stdout and 'ml setup' in result.stdout
    assert 'a-wrong-key-123' not in result.stdout + result.stderr
    assert 'enabled' in restored.stdout


def test_patient_batch_example_dryrun(sandbox):
    from sky_mithril.catalog import catalog_files
    result, out = dryrun(sandbox, catalog_files.example_path('patient-batch.yaml'))
    assert result.returncode == 0, out
    assert 'h100-80gb.sxm.8x' in out
    assert '$4.00/h per instance (limit_price_per_gpu $0.50 × 8 GPUs' in out
