"""The account's operations over HTTP: teammates, the organization's storage
quotas, and the MCC image versions (the rules are in
tests/unit/emulator/market/test_accounts.py)."""

from sky_mithril.emulator.market import MCC_IMAGE_VERSION_FID, PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.emulator_api import api


def test_teammates_are_the_user_itself(bare_emulator: EmulatorServer) -> None:
    me = api(bare_emulator, 'GET', '/v2/me').json()
    response = api(bare_emulator, 'GET', '/v2/me/teammates')
    assert response.status_code == 200
    assert response.json() == [{
        'id': me['id'], 'fid': me['fid'], 'user_name': me['user_name'],
        'email': me['email'], 'organization_role': 'owner',
        'project_ids': [PROJECT_FID], 'deactivated_at': None,
    }]


def test_organization_quotas_by_the_id_me_gives(
        bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    organization = api(server, 'GET', '/v2/me').json()['organization_id']
    region = api(server, 'GET', '/v2/spot/availability').json()[0]['region']
    created = api(server, 'POST', '/v2/volumes', {
        'name': 'data', 'project': PROJECT_FID, 'disk_interface': 'File',
        'region': region, 'size_gb': 100})
    assert created.status_code == 201, created.text
    response = api(server, 'GET', f'/v2/organizations/{organization}/quotas')
    assert response.status_code == 200
    rows = {row['region']: row for row in response.json()}
    row = rows[region]
    assert (row['product_type'], row['units'], row['limit_source']) == (
        'storage_gib', 'GiB', 'baseline')
    assert (row['granted'], row['used'], row['remaining']) == (20000, 100,
                                                              19900)
    assert [u['used'] for u in row['usage_by_project']] == [100]
    assert len({r['cluster_id'] for r in rows.values()}) == len(rows)
    assert all(r['remaining'] == 19900 for r in rows.values())
    other = api(server, 'GET', '/v2/organizations/'
                '00000000-0000-4000-8000-00000000ffff/quotas')
    assert other.status_code == 404
    assert api(server, 'GET', '/v2/organizations/org_x/quotas'
              ).status_code == 422


def test_mcc_image_versions_per_region(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    regions = sorted({a['region'] for a in
                      api(server, 'GET', '/v2/spot/availability').json()})
    image, = api(server, 'GET', '/v2/mcc-image-versions',
                 params={'region': regions[0]}).json()
    assert image['image_version_fid'] == MCC_IMAGE_VERSION_FID
    assert sorted(image['supported_regions']) == regions
    assert image['stable'] is True
    assert api(server, 'GET', '/v2/mcc-image-versions',
               params={'region': 'nowhere-1a'}).json() == []
    assert api(server, 'GET', '/v2/mcc-image-versions').status_code == 422
