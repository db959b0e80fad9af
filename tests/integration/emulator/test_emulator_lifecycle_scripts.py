"""Lifecycle scripts over HTTP: create, list (paged, sorted), read the
content at `content_url`, change and delete (the rules are in
tests/unit/emulator/market/test_lifecycle_scripts.py)."""

import requests

from sky_mithril.emulator.market import PROJECT_FID
from sky_mithril.emulator.server import EmulatorServer

from tests.helpers.emulator_api import AUTH, api


def test_lifecycle_script_routes(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    created = api(server, 'POST', '/v2/lifecycle-scripts', {
        'project': PROJECT_FID, 'name': 'setup',
        'content': '#!/bin/sh\necho hi\n'})
    assert created.status_code == 201, created.text
    script = created.json()
    assert (script['name'], script['description'], script['scope']) == (
        'setup', '', 'PROJECT')
    assert script['created_at'] == script['last_modified_at']
    content = requests.get(script['content_url'], headers=AUTH, timeout=10)
    assert content.status_code == 200
    assert content.json() == '#!/bin/sh\necho hi\n'
    assert script['content_url'].startswith(server.url)

    second = api(server, 'POST', '/v2/lifecycle-scripts', {
        'project': PROJECT_FID, 'name': 'other', 'content': 'true',
        'description': 'does nothing', 'scope': 'ORGANIZATION'}).json()
    first_page = api(server, 'GET', '/v2/lifecycle-scripts', params={
        'project': PROJECT_FID, 'limit': 1, 'sort_dir': 'desc'}).json()
    assert [s['fid'] for s in first_page['data']] == [second['fid']]
    rest = api(server, 'GET', '/v2/lifecycle-scripts', params={
        'project': PROJECT_FID, 'limit': 1, 'sort_dir': 'desc',
        'next_cursor': first_page['next_cursor']}).json()
    assert ([s['fid'] for s in rest['data']], rest['next_cursor']) == (
        [script['fid']], None)

    updated = api(server, 'PATCH', f'/v2/lifecycle-scripts/{script["fid"]}',
                  {'name': 'bootstrap', 'scope': 'ORGANIZATION'})
    assert updated.status_code == 200
    assert {**script, 'name': 'bootstrap', 'scope': 'ORGANIZATION',
            'last_modified_at': updated.json()['last_modified_at']
           } == updated.json()
    assert api(server, 'DELETE', f'/v2/lifecycle-scripts/{second["fid"]}'
              ).status_code == 204
    listed = api(server, 'GET', '/v2/lifecycle-scripts',
                 params={'project': PROJECT_FID}).json()
    assert [s['fid'] for s in listed['data']] == [script['fid']]


def test_lifecycle_script_refusals(bare_emulator: EmulatorServer) -> None:
    server = bare_emulator
    refused = api(server, 'POST', '/v2/lifecycle-scripts', {
        'project': PROJECT_FID, 'name': '', 'content': 'true',
        'scope': 'PLATFORM'})
    assert refused.status_code == 422
    assert [e['loc'] for e in refused.json()['detail']] == [
        ['body', 'name'], ['body', 'scope']]
    assert api(server, 'POST', '/v2/lifecycle-scripts', {
        'project': PROJECT_FID, 'name': 'x', 'content': 'true',
        'scope': 'EVERYONE'}).status_code == 422
    assert api(server, 'GET', '/v2/lifecycle-scripts').status_code == 422
    assert api(server, 'GET', '/v2/lifecycle-scripts', params={
        'project': PROJECT_FID, 'limit': 101}).status_code == 422
    for method, path in (('GET', '/v2/lifecycle-scripts/ls_unknown/content'),
                         ('PATCH', '/v2/lifecycle-scripts/ls_unknown'),
                         ('DELETE', '/v2/lifecycle-scripts/ls_unknown')):
        answer = api(server, method, path, {} if method == 'PATCH' else None)
        assert answer.status_code == 404, (method, path)
