"""The gunicorn worker class the bot serves with: gthread, plus one deadline for each whole request.

gunicorn's gthread workers read a request's headers and body with blocking reads and no
timeout, so a client that sends one byte a second holds a thread for as long as it likes;
64 such clients stop intake.  Here every connection's socket is wrapped so that each read
waits at most until a deadline set when the connection is first served (``KA_BODY_TIMEOUT``,
10 s): headers and body together must arrive by then.  A client that misses it is dropped
(while its headers are still coming) or answered 408 (while its body is, see
:func:`bot.web.app.read_body`).  A buffering reverse proxy in front remains the first line.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker


class RequestTimeout(NoMoreData):
    """The client did not send its request by the deadline (gunicorn drops it quietly, as a disconnect)."""

    def __str__(self) -> str:
        return "the request did not arrive in time"


class DeadlineSocket:
    """A socket whose reads give up at a fixed moment; everything else is the socket's own."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self.deadline = deadline

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise RequestTimeout()
        self._sock.settimeout(remaining)

    def recv(self, size: int, *flags: int) -> bytes:
        self._arm()
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            raise RequestTimeout() from None

    def recv_into(self, buffer: Any, *args: int) -> int:
        self._arm()
        try:
            return self._sock.recv_into(buffer, *args)
        except TimeoutError:
            raise RequestTimeout() from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class IntakeWorker(ThreadWorker):
    """gthread with a per-request deadline on every read (see the module's docstring)."""

    request_timeout = float(os.environ.get("KA_BODY_TIMEOUT") or 10)

    def handle(self, conn: Any) -> Any:
        if not conn.initialized and not isinstance(conn.sock, DeadlineSocket):
            conn.sock = DeadlineSocket(conn.sock, time.monotonic() + self.request_timeout)
        return super().handle(conn)
