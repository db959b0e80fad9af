"""Typed errors for Mithril API calls, with messages a user can act on.

The API key never reaches an exception's message, args, repr or `detail`: the
client redacts what it hands over here, and an error body is redacted both
as written and once decoded, since a server may echo the key with JSON
escapes (`\\/`, `\\u002b`) that only decoding turns back into the key.
"""

import json
from typing import Any, Dict, List, Optional, Tuple, Type

SETUP_HINT = ('Check MITHRIL_API_KEY, or store a working key with '
              '`sky-mithril setup --api-key` (or Mithril\'s `ml setup`).')
MAX_DETAIL_CHARS = 300
REDACTED = '<redacted>'


def redact(text: str, secret: Optional[str]) -> str:
    """Replaces every occurrence of `secret` in `text` with a fixed marker."""
    if not secret:
        return text
    return text.replace(secret, REDACTED)


def _redact_decoded(value: Any, secret: Optional[str]) -> Any:
    """Decoded JSON with `secret` redacted in every string, keys included."""
    if isinstance(value, str):
        return redact(value, secret)
    if isinstance(value, list):
        return [_redact_decoded(item, secret) for item in value]
    if isinstance(value, dict):
        return {_redact_decoded(key, secret): _redact_decoded(item, secret)
                for key, item in value.items()}
    return value


class MithrilAPIError(Exception):
    """A Mithril API call failed. `status_code` is None when no HTTP status arrived."""

    def __init__(self,
                 message: str,
                 *,
                 status_code: Optional[int] = None,
                 method: Optional[str] = None,
                 path: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.method = method
        self.path = path

    def __str__(self) -> str:
        return self.message

    def extend_message(self, text: str) -> None:
        """Appends a sentence (e.g. how many attempts were made) before raising."""
        self.message = f'{self.message} {text}'
        self.args = (self.message,)


class AuthenticationError(MithrilAPIError):
    """401: the API key is missing, wrong or revoked."""


class PermissionDeniedError(MithrilAPIError):
    """403: the key is valid but may not touch this project or resource."""


class NotFoundError(MithrilAPIError):
    """404: no resource with that fid (or it is gone)."""


class ConflictError(MithrilAPIError):
    """409: the request clashes with the resource's current state (e.g.
    deleting a volume a live bid still uses); the message carries the
    server's explanation."""


class ValidationError(MithrilAPIError):
    """400/422: the server rejected the request's contents.

    `detail` is the server's list of `{"loc": [...], "msg": ..., "type": ...}`
    entries (empty when it sent a plain message instead).
    """

    def __init__(self,
                 message: str,
                 *,
                 detail: Optional[List[Dict[str, Any]]] = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.detail = detail or []


class RateLimitedError(MithrilAPIError):
    """429: too many requests; `retry_after` is the server's requested wait in seconds."""

    def __init__(self,
                 message: str,
                 *,
                 retry_after: Optional[float] = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(MithrilAPIError):
    """5xx on an idempotent request (after retries when the status is transient)."""


class ConnectionFailedError(MithrilAPIError):
    """No usable HTTP answer: unreachable server, timeout or dropped connection.

    `retryable` is False for failures repeating cannot fix (bad URL, TLS).
    """

    def __init__(self,
                 message: str,
                 *,
                 retryable: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retryable = retryable


class AmbiguousResponseError(MithrilAPIError):
    """A non-idempotent request (POST) may or may not have been applied.

    Raised instead of retrying when the request may have reached the server
    but no trustworthy answer came back (read timeout, connection broken
    mid-response, unreadable 2xx body, 5xx). The caller must look the
    resource up (e.g. list bids by name) before trying again.
    """


def _format_location(loc: Any) -> str:
    if isinstance(loc, (list, tuple)):
        return '.'.join(str(part) for part in loc)
    return str(loc)


def format_validation_detail(detail: List[Dict[str, Any]]) -> str:
    """Joins FastAPI-style validation entries as "body.limit_price: msg; ..."."""
    parts = []
    for entry in detail:
        msg = str(entry.get('msg', 'invalid value'))
        loc = entry.get('loc')
        parts.append(f'{_format_location(loc)}: {msg}' if loc else msg)
    return '; '.join(parts)


def _truncate(text: str) -> str:
    text = ' '.join(text.split())
    if len(text) <= MAX_DETAIL_CHARS:
        return text
    return text[:MAX_DETAIL_CHARS] + '...'


def parse_error_body(body_text: str,
                     secret: Optional[str]) -> Tuple[str, List[Dict[str, Any]]]:
    """Extracts (human-readable detail, validation entries) from an error
    body, with `secret` redacted in the body as written and once decoded."""
    body_text = redact(body_text, secret)
    try:
        payload = _redact_decoded(json.loads(body_text),
                                  secret) if body_text else None
    except ValueError:
        return _truncate(body_text), []
    if isinstance(payload, dict):
        detail = payload.get('detail', payload.get('message',
                                                   payload.get('error')))
        if isinstance(detail, list) and all(
                isinstance(entry, dict) for entry in detail):
            return _truncate(format_validation_detail(detail)), detail
        if detail is not None:
            return _truncate(str(detail)), []
    return _truncate(body_text), []


def _with_detail(message: str, detail_text: str) -> str:
    return f'{message}: {detail_text}' if detail_text else message


def _class_and_message(status_code: int, request: str, detail_text: str,
                       retry_after: Optional[float]
                       ) -> Tuple[Type[MithrilAPIError], str]:
    """The error class for an HTTP status and the message that says what to do."""
    if status_code == 401:
        message = _with_detail(
            f'Mithril rejected the API key (401) on {request}', detail_text)
        return AuthenticationError, f'{message}. {SETUP_HINT}'
    if status_code == 403:
        message = _with_detail(f'Mithril denied access (403) to {request}',
                               detail_text)
        return PermissionDeniedError, (
            f'{message}. The API key is valid but lacks permission here; '
            f'check that MITHRIL_PROJECT names a project this key belongs '
            f'to.')
    if status_code == 404:
        message = _with_detail(f'Mithril found nothing at {request} (404)',
                               detail_text)
        return NotFoundError, f'{message}.'
    if status_code == 409:
        message = _with_detail(
            f'Mithril refused {request} as it conflicts with the current '
            'state (409)', detail_text)
        return ConflictError, f'{message.rstrip(".")}.'
    if status_code in (400, 422):
        message = _with_detail(
            f'Mithril rejected the request {request} ({status_code})',
            detail_text)
        return ValidationError, f'{message}.'
    if status_code == 429:
        wait = (f' The server asked to wait {retry_after:g} s.'
                if retry_after is not None else '')
        message = _with_detail(f'Mithril rate-limited {request} (429)',
                               detail_text)
        return RateLimitedError, f'{message}.{wait}'
    if status_code >= 500:
        message = _with_detail(
            f'Mithril had a server error ({status_code}) on {request}',
            detail_text)
        return ServerError, f'{message}.'
    message = _with_detail(
        f'Mithril answered {request} with unexpected HTTP {status_code}',
        detail_text)
    return MithrilAPIError, f'{message}.'


def error_for_status(status_code: int,
                     method: str,
                     path: str,
                     body_text: str,
                     *,
                     secret: Optional[str],
                     retry_after: Optional[float] = None) -> MithrilAPIError:
    """The typed error for an HTTP error response, with `secret` redacted
    from the body (as written and decoded) and from the final message."""
    detail_text, detail = parse_error_body(body_text, secret)
    error_class, message = _class_and_message(status_code, f'{method} {path}',
                                              detail_text, retry_after)
    context: Dict[str, Any] = dict(status_code=status_code,
                                   method=method,
                                   path=path)
    if error_class is ValidationError:
        context['detail'] = detail
    if error_class is RateLimitedError:
        context['retry_after'] = retry_after
    return error_class(redact(message, secret), **context)
