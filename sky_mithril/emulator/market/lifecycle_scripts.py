"""Lifecycle scripts: scripts a project keeps for its instances to run,
created, listed, read, renamed or re-described, re-scoped and deleted.

A script belongs to the project it was created in; its scope says who else
sees it (`ORGANIZATION`: the whole organization, which in the emulator is the
one project too). Users create `PROJECT` or `ORGANIZATION` scripts only;
`PLATFORM` scripts are Mithril's own, and the emulator has none. Every change
records when and by whom (`last_modified_at`, `last_modified_by`).
"""

from typing import List, Optional

from sky_mithril.emulator.market.accounts import Accounts
from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                NotFound)
from sky_mithril.emulator.market.records import (LifecycleScript,
                                                 LifecycleScriptScope)
from sky_mithril.emulator.market.state import MarketState

USER_SCOPES = (LifecycleScriptScope.PROJECT, LifecycleScriptScope.ORGANIZATION)


class LifecycleScripts:
    """Creates, finds, changes and deletes lifecycle scripts."""

    def __init__(self, state: MarketState, accounts: Accounts) -> None:
        self._state = state
        self._store = state.store
        self._accounts = accounts

    def create(self,
               *,
               project: str,
               name: str,
               content: str,
               description: Optional[str] = None,
               scope: LifecycleScriptScope = LifecycleScriptScope.PROJECT
              ) -> LifecycleScript:
        """A new script of `project`; raises InvalidRequest."""
        errors: List[FieldError] = []
        project_error = self._accounts.project_error(project)
        if project_error is not None:
            errors.append(project_error)
        errors.extend(_name_errors(name))
        if not content:
            errors.append(
                FieldError('content', 'content must not be empty',
                           'string_too_short'))
        errors.extend(_scope_errors(scope))
        if errors:
            raise InvalidRequest(errors)
        user = self._accounts.user.fid
        script = LifecycleScript(fid=self._state.new_fid('ls'),
                                 name=name,
                                 description=description or '',
                                 content=content,
                                 project=project,
                                 scope=scope,
                                 created_at=self._state.now,
                                 created_by=user,
                                 last_modified_at=self._state.now,
                                 last_modified_by=user,
                                 order=self._state.next_order())
        self._store.lifecycle_scripts[script.fid] = script
        return script

    def get(self, fid: str) -> LifecycleScript:
        script = self._store.lifecycle_scripts.get(fid)
        if script is None:
            raise NotFound('Lifecycle script', fid)
        return script

    def list(self, project: str) -> List[LifecycleScript]:
        """The scripts `project` sees, in creation order."""
        self._accounts.require_project(project)
        return [
            script for script in self._store.lifecycle_scripts.values()
            if script.project == project
        ]

    def update(self,
               fid: str,
               *,
               name: Optional[str] = None,
               description: Optional[str] = None,
               scope: Optional[LifecycleScriptScope] = None
              ) -> LifecycleScript:
        """Changes what is given (the content stays); raises InvalidRequest."""
        script = self.get(fid)
        errors: List[FieldError] = []
        if name is not None:
            errors.extend(_name_errors(name))
        if scope is not None:
            errors.extend(_scope_errors(scope))
        if errors:
            raise InvalidRequest(errors)
        if name is not None:
            script.name = name
        if description is not None:
            script.description = description
        if scope is not None:
            script.scope = scope
        script.last_modified_at = self._state.now
        script.last_modified_by = self._accounts.user.fid
        return script

    def delete(self, fid: str) -> None:
        del self._store.lifecycle_scripts[self.get(fid).fid]


def _name_errors(name: str) -> List[FieldError]:
    if name.strip():
        return []
    return [FieldError('name', 'name must not be empty', 'string_too_short')]


def _scope_errors(scope: LifecycleScriptScope) -> List[FieldError]:
    if scope in USER_SCOPES:
        return []
    return [
        FieldError('scope',
                   f'scope must be one of {[s.value for s in USER_SCOPES]}',
                   'enum')
    ]
