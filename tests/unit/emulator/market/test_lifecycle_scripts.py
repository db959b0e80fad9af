"""Lifecycle scripts: created, listed, changed (who and when recorded) and
deleted; the scopes a user may give."""

import pytest

from sky_mithril.emulator.market import (PROJECT_FID, InvalidRequest,
                                         LifecycleScriptScope, Market,
                                         NotFound)


def test_a_script_records_who_changed_it_and_when(market: Market) -> None:
    script = market.lifecycle_scripts.create(project=PROJECT_FID,
                                             name='setup',
                                             content='#!/bin/sh\necho hi\n')
    assert (script.scope, script.description) == (LifecycleScriptScope.PROJECT,
                                                  '')
    assert script.created_by == script.last_modified_by == (
        market.accounts.user.fid)
    created_at = market.now
    market.advance(60)
    market.lifecycle_scripts.update(script.fid, description='installs things',
                                    scope=LifecycleScriptScope.ORGANIZATION)
    assert (script.name, script.description, script.scope) == (
        'setup', 'installs things', LifecycleScriptScope.ORGANIZATION)
    assert script.content == '#!/bin/sh\necho hi\n'
    assert script.created_at == created_at
    assert script.last_modified_at == market.now != created_at
    market.lifecycle_scripts.update(script.fid, name='bootstrap')
    assert market.lifecycle_scripts.get(script.fid).name == 'bootstrap'


def test_scripts_are_listed_per_project_and_deleted(market: Market) -> None:
    first = market.lifecycle_scripts.create(project=PROJECT_FID, name='a',
                                            content='true')
    second = market.lifecycle_scripts.create(project=PROJECT_FID, name='b',
                                             content='true')
    assert market.lifecycle_scripts.list(PROJECT_FID) == [first, second]
    with pytest.raises(NotFound):
        market.lifecycle_scripts.list('proj_other')
    market.lifecycle_scripts.delete(first.fid)
    assert market.lifecycle_scripts.list(PROJECT_FID) == [second]
    with pytest.raises(NotFound):
        market.lifecycle_scripts.get(first.fid)
    with pytest.raises(NotFound):
        market.lifecycle_scripts.delete(first.fid)


def test_script_refusals_name_each_field(market: Market) -> None:
    with pytest.raises(InvalidRequest) as refused:
        market.lifecycle_scripts.create(project='proj_other', name=' ',
                                        content='',
                                        scope=LifecycleScriptScope.PLATFORM)
    assert [e.field for e in refused.value.errors] == [
        'project', 'name', 'content', 'scope'
    ]
    script = market.lifecycle_scripts.create(project=PROJECT_FID, name='a',
                                             content='true')
    with pytest.raises(InvalidRequest) as refused:
        market.lifecycle_scripts.update(script.fid, name='',
                                        scope=LifecycleScriptScope.PLATFORM)
    assert [e.field for e in refused.value.errors] == ['name', 'scope']
    assert (script.name, script.scope) == ('a', LifecycleScriptScope.PROJECT)
