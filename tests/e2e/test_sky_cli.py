"""Real `sky` CLI runs (the e2e tier's sandbox: API server on 127.0.0.1,
private HOME) against the emulator: the plugin taking over `mithril` is
proven by what users see."""

import re
from pathlib import Path

import pytest
import yaml

from sky_mithril.emulator.server import EmulatorServer
from sky_mithril.devtools.sandbox import SkySandbox

from tests.helpers.sandbox import set_profile

pytestmark = pytest.mark.e2e


@pytest.fixture(scope='module', autouse=True)
def mithril_enabled(sky_sandbox: SkySandbox) -> None:
    """The tier's sandbox, at `sandbox_emulator`, with Mithril enabled."""
    assert sky_sandbox.sky(['check', 'mithril']).returncode == 0


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


def test_dryrun_shows_our_catalog_row_and_number_limit(sky_sandbox):
    result, out = dryrun(sky_sandbox, write_task(sky_sandbox, 'num', {'accelerators': 'H100:8'},
                                                 {'limit_price': 24.5}))
    assert result.returncode == 0, out
    assert 'h100-80gb.sxm.8x' in out and 'us-central2-a' in out
    assert 'Mithril limit price: $24.50/h per instance (limit_price in config.mithril)' in out


def test_dryrun_dollar_string_limit(sky_sandbox):
    result, out = dryrun(sky_sandbox, write_task(sky_sandbox, 'dollar', {'accelerators': 'B200:8'},
                                                 {'limit_price': '$32.00'}))
    assert result.returncode == 0, out
    assert 'neb-b200.sxm.8x' in out
    assert 'Mithril limit price: $32.00/h' in out


def test_dryrun_per_gpu_limit_multiplies_by_gpus(sky_sandbox):
    result, out = dryrun(sky_sandbox, write_task(sky_sandbox, 'pergpu', {'accelerators': 'A100:4'},
                                                 {'limit_price_per_gpu': 1.25}))
    assert result.returncode == 0, out
    assert '$5.00/h per instance (limit_price_per_gpu $1.25 × 4 GPUs' in out


def test_dryrun_bids_at_max_hourly_cost_when_no_mithril_limit_is_set(sky_sandbox):
    """SkyPilot's own cap is the limit: without it the bid would carry
    Mithril's $32.00 default and could be billed above the cap."""
    result, out = dryrun(sky_sandbox, write_task(
        sky_sandbox, 'capped', {'accelerators': 'A100:1', 'max_hourly_cost': 20}))
    assert result.returncode == 0, out
    assert ('Mithril limit price: $20.00/h per instance '
            '(resources.max_hourly_cost of the task') in out


def test_dryrun_refuses_a_limit_above_max_hourly_cost_naming_both_keys(sky_sandbox):
    result, out = dryrun(sky_sandbox, write_task(
        sky_sandbox, 'over-cap', {'accelerators': 'A100:1', 'max_hourly_cost': 20},
        {'limit_price': 25}))
    assert result.returncode != 0, out
    assert 'limit_price in config.mithril gives $25.00/h per instance' in out
    assert 'above resources.max_hourly_cost $20.00/h' in out


def test_dryrun_shows_the_worst_case_against_max_hourly_spend(sky_sandbox):
    result, out = dryrun(sky_sandbox, write_task(
        sky_sandbox, 'budgeted', {'accelerators': 'A100:1'},
        {'limit_price': 4, 'max_hourly_spend': 500}))
    assert result.returncode == 0, out
    assert re.search(r'Mithril spend: worst case now \$[\d,]+\.\d\d/h of your '
                     r'\$500\.00/h \(max_hourly_spend in config\.mithril\)', out), out


def test_dryrun_over_max_hourly_spend_is_refused_before_any_bid(sky_sandbox):
    result, out = dryrun(sky_sandbox, write_task(
        sky_sandbox, 'over-budget', {'accelerators': 'A100:1'},
        {'limit_price': 25, 'max_hourly_spend': 10}))
    assert result.returncode != 0, out
    assert 'Mithril spend budget: this launch' in out
    assert 'above $10.00/h (max_hourly_spend in config.mithril)' in out


def test_dryrun_without_limit_uses_the_documented_default(sky_sandbox):
    result, out = dryrun(sky_sandbox, write_task(sky_sandbox, 'default', {'accelerators': 'A100:1'}))
    assert result.returncode == 0, out
    assert "$32.00/h per instance (Mithril's default" in out


def test_region_selection(sky_sandbox):
    """(Bad limits, unknown keys, zones and regions without the GPU are
    refused in test_bad_inputs.py: one real launch per kind of error here in
    tests/e2e, the rest in-process in tests/unit and tests/integration.)"""
    ok, out = dryrun(sky_sandbox, write_task(sky_sandbox, 'region', {
        'infra': 'mithril/us-central3-a', 'accelerators': 'A100:2'}))
    assert ok.returncode == 0, out
    assert 'a100-80gb.sxm.2x' in out and 'us-central3-a' in out


def test_cpu_only_task_gets_the_cheapest_machine(sky_sandbox):
    """A CPU VM at its fixed price, not the cheapest GPU machine's bid."""
    result, out = dryrun(sky_sandbox, write_task(sky_sandbox, 'cpu', {'cpus': '4+'}))
    assert result.returncode == 0, out
    assert re.search(r'Mithril CPU VM: \S+ in \S+ at a fixed \$[0-9.]+/h; no bid', out), out


def test_show_gpus_lists_our_catalog(sky_sandbox):
    listing = sky_sandbox.sky(['show-gpus', '--infra', 'mithril'])
    assert listing.returncode == 0, listing.stderr
    for gpu in ('A100', 'B200', 'H100', 'H200'):
        assert gpu in listing.stdout
    b200 = sky_sandbox.sky(['show-gpus', 'B200', '--infra', 'mithril'])
    assert b200.returncode == 0, b200.stderr
    assert 'neb-b200.sxm.8x' in b200.stdout and 'us-central5-a' in b200.stdout


def test_check_reports_the_real_reason(sky_sandbox, sandbox_emulator):
    good = yaml.safe_load((sky_sandbox.home / '.config/mithril/config.yaml').read_text())
    try:
        set_profile(sky_sandbox, api_url='http://127.0.0.1:9')
        unreachable = sky_sandbox.sky(['check', 'mithril'])
        assert 'disabled' in unreachable.stdout.lower()
        assert 'unreachable' in unreachable.stdout.lower() or 'connect' in unreachable.stdout.lower()

        set_profile(sky_sandbox, api_url=sandbox_emulator.url, project_id='proj_nope')
        no_project = sky_sandbox.sky(['check', 'mithril'])
        assert "'proj_nope'" in no_project.stdout and 'MITHRIL_PROJECT' in no_project.stdout
    finally:
        (sky_sandbox.home / '.config/mithril/config.yaml').write_text(yaml.safe_dump(good))
    assert 'enabled' in sky_sandbox.sky(['check', 'mithril']).stdout


def test_check_reports_a_rejected_key(sky_sandbox):
    """The module's sandbox with its profile's key swapped for one the API
    rejects (a sandbox of its own cost an API server start, ~45 s)."""
    profile = sky_sandbox.home / '.config/mithril/config.yaml'
    good = profile.read_text()
    with EmulatorServer(api_key='the-right-key') as server:
        try:
            set_profile(sky_sandbox, api_url=server.url, api_key='a-wrong-key-123')
            result = sky_sandbox.sky(['check', 'mithril'])
        finally:
            profile.write_text(good)
            restored = sky_sandbox.sky(['check', 'mithril'])
    assert 'disabled' in result.stdout.lower()
    assert '401' in result.stdout and 'ml setup' in result.stdout
    assert 'a-wrong-key-123' not in result.stdout + result.stderr
    assert 'enabled' in restored.stdout


def test_patient_batch_example_dryrun(sky_sandbox):
    from sky_mithril.catalog import catalog_files
    result, out = dryrun(sky_sandbox, catalog_files.example_path('patient-batch.yaml'))
    assert result.returncode == 0, out
    assert 'h100-80gb.sxm.8x' in out
    assert '$4.00/h per instance (limit_price_per_gpu $0.50 × 8 GPUs' in out
