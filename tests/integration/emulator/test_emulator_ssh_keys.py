"""SSH keys over HTTP: marking one required and deleting one (the rules are
in tests/unit/emulator/market/test_ssh_keys.py)."""

from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.emulator_api import api

PUBLIC_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEmulatorTestKey test'


def test_update_and_delete_an_ssh_key(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    key = api(server, 'POST', '/v2/ssh-keys', {
        'project': PROJECT_FID, 'name': 'laptop',
        'public_key': PUBLIC_KEY}).json()
    updated = api(server, 'PATCH', f'/v2/ssh-keys/{key["fid"]}',
                  {'required': True})
    assert updated.status_code == 200
    created = {k: v for k, v in key.items() if k != 'private_key'}
    assert updated.json() == {**created, 'required': True}
    listed = api(server, 'GET', '/v2/ssh-keys', params={'project': PROJECT_FID})
    assert listed.json()[0]['required'] is True
    assert api(server, 'PATCH', f'/v2/ssh-keys/{key["fid"]}',
               {}).status_code == 422
    assert api(server, 'PATCH', '/v2/ssh-keys/sshkey_unknown',
               {'required': True}).status_code == 404

    auction = api(server, 'GET', '/v2/spot/availability').json()[0]
    bid = api(server, 'POST', '/v2/spot/bids', {
        'project': PROJECT_FID, 'region': auction['region'],
        'instance_type': auction['instance_type'], 'limit_price': '$1.00',
        'instance_quantity': 1, 'name': 'uses-the-key',
        'launch_specification': {'ssh_keys': [key['fid']], 'volumes': []},
    }).json()
    refused = api(server, 'DELETE', f'/v2/ssh-keys/{key["fid"]}')
    assert refused.status_code == 409
    assert bid['fid'] in refused.json()['detail']
    assert api(server, 'DELETE', f'/v2/spot/bids/{bid["fid"]}'
              ).status_code == 204
    deleted = api(server, 'DELETE', f'/v2/ssh-keys/{key["fid"]}')
    assert (deleted.status_code, deleted.content) == (204, b'')
    assert api(server, 'GET', '/v2/ssh-keys',
               params={'project': PROJECT_FID}).json() == []
    assert api(server, 'DELETE', f'/v2/ssh-keys/{key["fid"]}'
              ).status_code == 404
