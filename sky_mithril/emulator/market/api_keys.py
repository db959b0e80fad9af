"""API keys the user mints (`POST /v2/api-keys`), and which bearer tokens the
market accepts.

A minted key acts as the market's one user, in its one project, like the
account's own key (Mithril has no scoped keys), until it is revoked or its
`expires_at` passes on the market's clock; from then on every request made
with it is refused. Any other token is the account's own key: the one the
server was started with, or, when it was started without one, any token.
Mithril's rules for a new key: a name of fewer than 60 characters and an
expiry between now and a year from now.
"""

import dataclasses
import datetime
import hmac
from typing import Dict, List, Optional

from sky_mithril.emulator.market.errors import (FieldError, InvalidRequest,
                                                NotFound)
from sky_mithril.emulator.market.state import MarketState

MAX_NAME_LENGTH = 59
MAX_LIFETIME = datetime.timedelta(days=365)
SECRET_PREFIX = 'fkey_'
SECRET_LENGTH = 40
# The start of the secret that listings show, as Mithril's `snippet`.
SNIPPET_LENGTH = 9


@dataclasses.dataclass
class ApiKey:
    """A minted key. `secret` is shown once, in the create answer."""

    fid: str
    name: str
    created_at: datetime.datetime
    expires_at: datetime.datetime
    secret: str = dataclasses.field(repr=False)
    deactivated_at: Optional[datetime.datetime] = None

    @property
    def snippet(self) -> str:
        return self.secret[:SNIPPET_LENGTH] + '...'

    def live_at(self, now: datetime.datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        return self.deactivated_at is None and now < self.expires_at


class ApiKeys:
    """Mints, lists and revokes keys; says whether a token authenticates."""

    def __init__(self, state: MarketState) -> None:
        self._state = state
        self._keys: Dict[str, ApiKey] = {}

    def create(self, name: str, expires_at: datetime.datetime) -> ApiKey:
        """A new key; raises InvalidRequest for a name or expiry Mithril refuses."""
        now = self._state.now
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=datetime.timezone.utc)
        errors = []
        if not name.strip():
            errors.append(FieldError('name', 'API key name must not be empty',
                                     'string_too_short'))
        elif len(name) > MAX_NAME_LENGTH:
            errors.append(FieldError(
                'name', f'API key name must be less than '
                f'{MAX_NAME_LENGTH + 1} characters', 'string_too_long'))
        if not now < expires_at <= now + MAX_LIFETIME:
            errors.append(FieldError(
                'expires_at', 'API key expiry must be between now and 1 year '
                'from now'))
        if errors:
            raise InvalidRequest(errors)
        key = ApiKey(fid=self._state.new_fid('apikey'),
                     name=name,
                     created_at=now,
                     expires_at=expires_at,
                     secret=SECRET_PREFIX + self._state.random_token(
                         SECRET_LENGTH))
        self._keys[key.fid] = key
        return key

    def list(self) -> List[ApiKey]:
        """Every key minted, revoked and expired ones too, in creation order."""
        return list(self._keys.values())

    def revoke(self, fid: str) -> ApiKey:
        """Deactivates the key now; a key already revoked stays as it was."""
        key = self._keys.get(fid)
        if key is None:
            raise NotFound('API key', fid)
        if key.deactivated_at is None:
            key.deactivated_at = self._state.now
        return key

    def authenticates(self, token: str, account_key: Optional[str]) -> bool:
        """Whether `token` may call the API now: a minted key while it is
        live; otherwise the account's key (`account_key`, or any token when
        that is None)."""
        for key in self._keys.values():
            if hmac.compare_digest(token.encode(), key.secret.encode()):
                return key.live_at(self._state.now)
        return account_key is None or hmac.compare_digest(
            token.encode(), account_key.encode())
