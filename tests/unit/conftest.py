"""The unit tier is pure: a test here that starts a process or opens a connection fails, and belongs in
tests/integration."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest


class NotAUnitTest(AssertionError):
    """A unit test reached outside its process."""


@pytest.fixture(autouse=True)
def _pure(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse_process(self: Any, args: Any, *rest: Any, **kw: Any) -> None:
        raise NotAUnitTest(f"a unit test started a process: {args!r}; move it to tests/integration")

    def refuse_connect(self: socket.socket, address: Any) -> None:
        raise NotAUnitTest(f"a unit test connected to {address!r}; move it to tests/integration")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse_process)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse_connect)
    yield
