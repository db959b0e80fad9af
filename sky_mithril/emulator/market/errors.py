"""What the market raises when it refuses a request. An error names the
refused field (the market method's argument), never where an HTTP request
carried it: the routes add that (`wire.fields_at`). The HTTP status each
error gets is the server's (`server.build_app`)."""

import dataclasses
from typing import Optional, Sequence


class MarketError(Exception):
    """A request the market refuses."""


class NotFound(MarketError):
    """An unknown fid (or instance type / region pair)."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f'{kind} {key} not found')
        self.kind = kind
        self.key = key


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One refused field: which (`field`, the market method's argument, and
    `index`, the refused entry of a list argument), why (`msg`), what kind of
    refusal (`type`, in pydantic's words: 'value_error', 'string_too_short')."""

    field: str
    msg: str
    type: str = 'value_error'
    index: Optional[int] = None

    def __str__(self) -> str:
        where = self.field if self.index is None else f'{self.field}[{self.index}]'
        return f'{where}: {self.msg}'


class InvalidRequest(MarketError):
    """The request is well-formed but not acceptable, one error per refused field."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__('; '.join(str(e) for e in errors))
        self.errors = list(errors)


class InvalidState(MarketError):
    """A control action that does not apply to the entity's current state."""


class Declined(MarketError):
    """An action the entity's state rules out, for a `reason` a client can
    act on (Mithril's refresh-boot-disk: `INSTANCE_RUNNING`,
    `INVALID_IMAGE_VERSION`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NotSupported(MarketError):
    """An action Mithril does not offer for this kind of entity (pausing,
    restarting or refreshing a spot instance)."""
