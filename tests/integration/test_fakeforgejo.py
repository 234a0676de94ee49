"""The fake Forgejo itself: it must catch what real Forgejo would reject or silently drop."""

from __future__ import annotations

import pytest
import requests

from tests.support.fakeforgejo import FakeForgejo, Spec

API = "/api/v1/repos/fleet/kernel-agent"


@pytest.mark.parametrize(("method", "path", "body", "problem"), [
    ("POST", f"{API}/statuses/abc", {"state": "success", "context": "c"}, None),
    ("POST", f"{API}/statuses/abc", {"status": "success"}, "Additional properties are not allowed"),
    ("POST", f"{API}/statuses/abc", {"state": 3}, "is not of type 'string'"),
    ("POST", f"{API}/statuses", {"state": "success"}, "no such path"),
    ("PUT", f"{API}/statuses/abc", {"state": "success"}, "method not in the spec"),
    ("PATCH", f"{API}/issues/comments/x", {"body": "b"}, "is not an integer"),
    ("POST", f"{API}/issues/2/comments", {"body": "hello"}, None),
    ("POST", f"{API}/issues/2/comments", {"text": "hello"}, "Additional properties"),
    ("GET", f"{API}/pulls/3", None, None),
])
def test_spec_check(method: str, path: str, body: dict | None, problem: str | None) -> None:
    import json

    found = Spec().check(method, path, {}, json.dumps(body).encode() if body is not None else b"")
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


def test_serves_and_records() -> None:
    fake = FakeForgejo().start()
    try:
        s = requests.Session()
        s.headers["Authorization"] = f"token {fake.token}"
        res = s.post(fake.url + f"{API}/statuses/abc", json={"state": "pending", "context": "ka/parity/x"})
        assert res.status_code == 201 and res.json()["status"] == "pending"
        assert requests.post(fake.url + f"{API}/statuses/abc", json={}).status_code == 401
        assert s.get(fake.url + "/api/v1/repos/other/repo/pulls/1").status_code == 404
        assert fake.statuses("abc") == [{"state": "pending", "context": "ka/parity/x", "sha": "abc"}]
        fake.down()
        with pytest.raises(requests.ConnectionError):
            s.post(fake.url + f"{API}/statuses/abc", json={"state": "pending"}, timeout=2)
        fake.up()
        assert s.get(fake.url + f"{API}/pulls/9").status_code == 404
        assert fake.violations == []
    finally:
        fake.stop()


def test_a_request_cut_off_before_its_body_creates_nothing() -> None:
    """A bot killed after sending a status's headers: the fake once recorded that as a status created, with no
    body, and a test reading the statuses failed on it."""
    import socket
    import time

    fake = FakeForgejo().start()
    try:
        with socket.create_connection(("127.0.0.1", fake.port)) as sock:
            sock.sendall(f"POST {API}/statuses/abc HTTP/1.1\r\nHost: x\r\nAuthorization: token {fake.token}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 48\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while not fake.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.statuses() == [] and [c.status for c in fake.calls] == [400]
    finally:
        fake.stop()
