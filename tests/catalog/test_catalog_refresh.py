"""`sky-mithril catalog refresh` rebuilds the CSV from a live API (the emulator)."""

import subprocess
import sys

import requests

from sky_mithril.catalog import catalog_files


def test_refresh_writes_every_auction_with_its_spot_price(emulator_server, tmp_path):
    requests.post(f'{emulator_server.url}/_emulator/price', timeout=10, json={
        'instance_type': 'h100-80gb.sxm.8x', 'region': 'us-central2-a',
        'price': '$11.25'}).raise_for_status()
    output = tmp_path / 'vms.csv'
    env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path),
           'MITHRIL_API_URL': emulator_server.url, 'MITHRIL_API_KEY': 'refresh-key',
           'MITHRIL_PROJECT': 'proj_emulator'}
    result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli', 'catalog',
                             'refresh', '--output', str(output)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    shipped = catalog_files.read_rows(catalog_files.catalog_path())
    fresh = catalog_files.read_rows(output)
    assert {(r['InstanceType'], r['Region']) for r in fresh} == {
        (r['InstanceType'], r['Region']) for r in shipped}
    h100 = next(r for r in fresh if r['InstanceType'] == 'h100-80gb.sxm.8x')
    assert (h100['AcceleratorName'], h100['AcceleratorCount']) == ('H100', '8')
    assert h100['Price'] == '11.25' and h100['SpotPrice'] == '11.25'
    assert f'Wrote {len(fresh)} rows' in result.stdout


def test_refresh_with_a_rejected_key_says_so_and_writes_nothing(tmp_path):
    from sky_mithril.emulator.server import EmulatorServer
    output = tmp_path / 'vms.csv'
    with EmulatorServer(api_key='right') as server:
        env = {'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path),
               'MITHRIL_API_URL': server.url, 'MITHRIL_API_KEY': 'wrong-key-xyz'}
        result = subprocess.run([sys.executable, '-m', 'sky_mithril.cli', 'catalog',
                                 'refresh', '--output', str(output)],
                                env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert '401' in result.stderr and 'wrong-key-xyz' not in result.stderr
    assert not output.exists()
