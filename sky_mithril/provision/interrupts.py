"""Holding Ctrl-C and SkyPilot's cancel while a request that changes the market
is in flight.

SkyPilot cancels a request by sending SIGTERM to its worker, whose handler
raises KeyboardInterrupt wherever the main thread is, including inside a
blocking HTTP call. A bid POST abandoned that way may still be committed by
the server a moment later, and the launch would leave without knowing the
bid exists. Inside `deferred()` SIGINT and SIGTERM are recorded instead; the
request finishes (bounded by the client's own timeout), so its outcome is
known, and the signal is delivered to the previous handler on the way out,
where the caller's cleanup sees it as before.
"""

import contextlib
import os
import signal
import threading
from typing import Any, Dict, Iterator, List, Optional

_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _deliver(signum: int, handler: Any) -> None:
    """Hands a held signal to the handler that was in place before."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Delays SIGINT/SIGTERM until the block ends, then delivers the first.

    Signals only reach Python's main thread, so elsewhere this does nothing.
    Nested blocks hand their held signal to the enclosing one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []

    def hold(signum: int, frame: Any) -> None:
        del frame
        received.append(signum)

    previous: Dict[int, Optional[Any]] = {
        signum: signal.signal(signum, hold) for signum in _HELD_SIGNALS
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum,
                          signal.SIG_DFL if handler is None else handler)
        if received:
            _deliver(received[0], previous[received[0]])
