"""A fake Forgejo on loopback: real HTTP, every request checked against Forgejo's own API spec.

It answers the endpoints the bot uses as Forgejo 15 does, records every call, and lists
every request that the spec would not accept (unknown path or method, wrong parameter
type, a body that does not match the schema, or a body field the schema does not know,
which real Forgejo would silently drop).  It can refuse connections (``down``) or answer
5xx for a while, to test the bot's outbox.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema

SPEC = Path(__file__).resolve().parents[1] / "samples" / "forgejo" / "openapi.json"


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int = 0


def _strict(schema: Any) -> Any:
    """A copy of the spec's schemas in which objects refuse properties they do not declare."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class Spec:
    """The swagger 2.0 document, compiled for matching and validation."""

    def __init__(self, path: Path = SPEC) -> None:
        self.doc = json.loads(path.read_text())
        self.base = self.doc["basePath"]
        self.definitions = _strict(copy.deepcopy(self.doc["definitions"]))
        self.routes = []
        for template, item in self.doc["paths"].items():
            regex = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$"
            literal = len([s for s in template.split("/") if s and not s.startswith("{")])
            self.routes.append((literal, template, re.compile(regex), item))
        self.routes.sort(key=lambda r: -r[0])

    def match(self, path: str) -> tuple[str, dict[str, str], dict[str, Any]] | None:
        if not path.startswith(self.base):
            return None
        rest = path[len(self.base):]
        for _, template, regex, item in self.routes:
            m = regex.match(rest)
            if m:
                return template, {k: unquote(v) for k, v in m.groupdict().items()}, item
        return None

    def check(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> list[str]:
        """Everything about this request that the spec does not allow."""
        found = self.match(path)
        if found is None:
            return [f"{method} {path}: no such path in the spec"]
        template, params, item = found
        op = item.get(method.lower())
        if op is None:
            return [f"{method} {template}: method not in the spec"]
        problems = []
        declared = op.get("parameters", []) + item.get("parameters", [])
        for p in declared:
            problems += self._param(method, template, p, params, query, body)
        known_query = {p["name"] for p in declared if p["in"] == "query"}
        problems += [f"{method} {template}: unknown query parameter {q}" for q in query if q not in known_query]
        if body and not any(p["in"] == "body" for p in declared):
            problems.append(f"{method} {template}: a body where the spec takes none")
        return problems

    def _param(self, method: str, template: str, p: dict[str, Any], params: dict[str, str],
               query: dict[str, list[str]], body: bytes) -> list[str]:
        where = f"{method} {template}: {p['in']} {p['name']}"
        if p["in"] == "path":
            value = params.get(p["name"], "")
            if p.get("type") == "integer" and not value.isdigit():
                return [f"{where}: {value!r} is not an integer"]
            return []
        if p["in"] == "query":
            if p.get("required") and p["name"] not in query:
                return [f"{where}: required"]
            return []
        if p["in"] == "body":
            if not body:
                return [f"{where}: required"] if p.get("required") else []
            try:
                data = json.loads(body)
            except ValueError:
                return [f"{where}: not JSON"]
            schema = {**_strict(p["schema"]), "definitions": self.definitions}
            validator = jsonschema.Draft4Validator(schema)
            return [f"{where}: {e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(data)]
        return []


@dataclass
class FakeForgejo:
    """The fake server; ``url`` is the base to give the bot as ``KA_FORGEJO_URL``."""

    repo: str = "fleet/kernel-agent"
    token: str = "fake-forgejo-token"
    spec: Spec = field(default_factory=Spec)
    calls: list[Call] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    permissions: dict[str, str] = field(default_factory=dict)
    #: collaborators added to the repository; None: everyone with an entry in ``permissions``
    collaborators: set[str] | None = None
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    opened: list[dict[str, Any]] = field(default_factory=list)  # pull requests the bot opened
    branches: dict[str, str] = field(default_factory=dict)  # name → head commit
    default_branch: str = "main"
    login: str = "ka-bot"
    #: comment id → {"id", "number", "body", "edits"}: what a thread would show
    comment_log: dict[int, dict[str, Any]] = field(default_factory=dict)
    reaction_log: list[tuple[int, str]] = field(default_factory=list)
    #: the next this many new comments are created, but their answer comes this late (a lost answer)
    slow_comment_posts: int = 0
    slow_comment_delay: float = 0.0
    fail_with: int | None = None
    fail_next: int = 0  #: the next this many requests are answered 503 (a forge that is briefly busy)
    #: GET /user is refused as Forgejo refuses a token without the read:user scope
    user_refused: bool = False
    port: int = 0

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeForgejo:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def down(self) -> None:
        """Stop listening: the bot now gets 'connection refused'."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def up(self) -> None:
        """Listen again on the same port."""
        self.start()

    stop = down

    # --- what tests read ---------------------------------------------------------------------

    def statuses(self, sha: str | None = None) -> list[dict[str, Any]]:
        """Commit statuses accepted so far, in order (optionally for one commit)."""
        with self._lock:
            return [dict(c.body, sha=c.path.rsplit("/", 1)[1]) for c in self.calls
                    if c.method == "POST" and "/statuses/" in c.path and c.status == 201
                    and (sha is None or c.path.endswith(sha))]

    def latest(self, sha: str) -> dict[str, dict[str, Any]]:
        """The newest status per context, as Forgejo's combined view shows them."""
        return {s["context"]: s for s in self.statuses(sha)}

    def comments(self, number: int) -> list[dict[str, Any]]:
        """The bot's comments on issue or pull request ``number``, oldest first, as edited."""
        with self._lock:
            return [dict(c) for c in self.comment_log.values() if c["number"] == number]

    def reactions(self, comment_id: int) -> list[str]:
        """Reactions added to a comment, in order."""
        with self._lock:
            return [content for cid, content in self.reaction_log if cid == comment_id]

    # --- serving -----------------------------------------------------------------------------

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        query = parse_qs(parts.query)
        if len(raw) < length:  # the client died mid-request (a killed bot): Forgejo reads an unexpected EOF
            with self._lock:    # and creates nothing; the answer reaches no one
                self.calls.append(Call(req.command, parts.path, query, None, 400))
            return
        call = Call(req.command, parts.path, query, json.loads(raw) if raw.strip() else None)
        problems = self.spec.check(req.command, parts.path, query, raw)
        status, body = self._answer(req, call, problems)
        call.status = status
        if status == 201 and call.method == "POST" and call.path.endswith("/comments") and self.slow_comment_posts:
            self.slow_comment_posts -= 1
            time.sleep(self.slow_comment_delay)  # it was created; the client gives up waiting for the answer
        with self._lock:
            self.calls.append(call)
            self.violations.extend(problems)
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json;charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _answer(self, req: BaseHTTPRequestHandler, call: Call, problems: list[str]) -> tuple[int, Any]:
        if self.fail_with:
            return self.fail_with, {"message": "fake outage"}
        with self._lock:
            busy, self.fail_next = self.fail_next > 0, max(0, self.fail_next - 1)
        if busy:
            return 503, {"message": "fake: busy"}
        auth = req.headers.get("Authorization", "")
        if auth.split(" ", 1)[-1] != self.token or auth.split(" ", 1)[0].lower() not in ("token", "bearer"):
            return 401, {"message": "token is required", "url": self.url}
        if problems:
            return 422, {"message": "; ".join(problems), "url": self.url}
        found = self.spec.match(call.path)
        assert found is not None
        template, params, _ = found
        if template == "/user" and call.method == "GET":
            if self.user_refused:
                return 403, {"message": "token does not have at least one of required scope(s): [read:user]",
                             "url": self.url}
            return 200, {"login": self.login, "id": 99}
        if f"{params.get('owner')}/{params.get('repo')}" != self.repo:
            return 404, {"message": "repository does not exist", "url": self.url, "errors": []}
        return self._route(call.method, template, params, call.body or {})

    def _route(self, method: str, template: str, params: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        now = "2026-11-25T12:00:00Z"
        key = (method, template.removeprefix("/repos/{owner}/{repo}"))
        if key == ("POST", "/statuses/{sha}"):
            return 201, {"id": next(self._ids), "status": body.get("state"), "context": body.get("context"),
                         "description": body.get("description"), "target_url": body.get("target_url"),
                         "created_at": now, "updated_at": now}
        if key == ("POST", "/issues/{index}/comments"):
            if not body.get("body"):
                return 422, {"message": "[Body]: Required"}
            cid = next(self._ids)
            with self._lock:
                self.comment_log[cid] = {"id": cid, "number": int(params["index"]), "body": body["body"], "edits": 0}
            return 201, {"id": cid, "body": body["body"], "created_at": now,
                         "html_url": f"{self.url}/{self.repo}/pulls/{params['index']}#issuecomment-{cid}"}
        if key == ("GET", "/issues/{index}/comments"):
            with self._lock:
                return 200, [{"id": c["id"], "body": c["body"], "user": {"login": self.login}}
                             for c in self.comment_log.values() if c["number"] == int(params["index"])]
        if key == ("PATCH", "/issues/comments/{id}"):
            with self._lock:
                found = self.comment_log.get(int(params["id"]))
                if found is None:
                    return 404, {"message": "comment does not exist", "errors": []}
                found.update(body=body.get("body"), edits=found["edits"] + 1)
            return 200, {"id": int(params["id"]), "body": body.get("body"), "updated_at": now}
        if key == ("POST", "/issues/comments/{id}/reactions"):
            with self._lock:
                self.reaction_log.append((int(params["id"]), str(body.get("content"))))
            return 201, {"content": body.get("content"), "created_at": now}
        if key == ("GET", ""):
            return 200, {"full_name": self.repo, "default_branch": self.default_branch}
        if key == ("GET", "/branches/{branch}"):
            sha = self.branches.get(params["branch"])
            if sha is None:
                return 404, {"message": "branch does not exist", "errors": []}
            return 200, {"name": params["branch"], "commit": {"id": sha}}
        if key == ("GET", "/collaborators/{collaborator}/permission"):
            perm = self.permissions.get(params["collaborator"])
            if perm is None:
                return 404, {"message": "user does not exist", "errors": []}
            return 200, {"permission": perm, "role_name": perm, "user": {"login": params["collaborator"]}}
        if key == ("GET", "/collaborators/{collaborator}"):
            known = self.collaborators if self.collaborators is not None else set(self.permissions)
            return (204, None) if params["collaborator"] in known else (404, {"message": "user is not a collaborator"})
        if key == ("POST", "/pulls"):
            with self._lock:
                number = max([*self.pulls, *(p["number"] for p in self.opened)], default=0) + 1
                pr = {"number": number, "state": "open", "title": body.get("title"), "body": body.get("body"),
                      "html_url": f"{self.url}/{self.repo}/pulls/{number}", "head": {"ref": body.get("head")},
                      "base": {"ref": body.get("base")}, "created_at": now}
                self.opened.append(pr)
            return 201, pr
        if key == ("GET", "/pulls/{index}"):
            pr = self.pulls.get(int(params["index"]))
            return (200, pr) if pr else (404, {"message": "pull request does not exist", "errors": []})
        self.violations.append(f"{method} {template}: valid, but the fake does not answer it")
        return 501, {"message": "not faked"}
