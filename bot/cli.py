"""``ka-bot``: serve (web app and worker together), worker (alone), deliver (a signed sample delivery)."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from bot import config as config_mod
from bot.config import Config
from bot.events.delivery import sign
from bot.jobs.worker import build_tasks, hold_worker_lock, recover, start_dispatcher
from bot.local import describe
from bot.services import make_services, prepare_state_dir
from bot.store import StateError, Store
from ka.errors import EXIT_ENVIRONMENT, EXIT_OK, BadInput, KaError

log = logging.getLogger("ka-bot")


class BotUnreachable(KaError):
    """``deliver`` could not reach the bot."""
_PR_SET_PDEATHSIG = 1


def _config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {"insecure": True} if getattr(args, "insecure", False) else {}
    for name in ("state_dir", "workers"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = Path(value) if name == "state_dir" else value
    cfg = config_mod.load(Path(args.config) if args.config else None, overrides=overrides)
    cfg.require_secret()
    return cfg


def _die_with_parent(signum: int) -> Callable[[], None]:
    """For a child of ``serve``: receive ``signum`` when serve ends, even by SIGKILL (Linux prctl)."""
    def arm() -> None:
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    return arm


def cmd_serve(args: argparse.Namespace) -> int:
    """The web app (gunicorn) and a job worker as two children, supervised: if one dies, both stop."""
    cfg = _config(args)
    _port_free(args.host, args.port)
    services = make_services(cfg, check=True)  # the state folder, schema and a quick_check, before the children
    if cfg.local_mode:  # the fleet page names the default branch of the repository the bot fetches from
        _note_local_branch(services)
    env = {**os.environ, "KA_STATE_DIR": str(cfg.state_dir), "KA_WORKERS": str(cfg.workers),
           "KA_BODY_TIMEOUT": str(cfg.body_timeout),
           **({"KA_CONFIG": args.config} if args.config else {}), **({"KA_INSECURE": "1"} if cfg.insecure else {})}
    # Threads, not sync workers, and a deadline on each whole request (bot.web.serving): a client that
    # sends slowly holds one thread for at most KA_BODY_TIMEOUT, not a whole worker, so slow or
    # hostile clients cannot stall intake.  A worker takes no more connections than it has threads
    # (the others wait in the backlog for a free one), and no keep-alive: a webhook is one request.
    children = {"web": subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"{args.host}:{args.port}", "--workers", str(args.web_workers),
         "--worker-class", "bot.web.serving.IntakeWorker", "--threads", str(args.threads),
         "--worker-connections", str(args.threads), "--keep-alive", "0", "--no-control-socket",
         "--timeout", "30", "--graceful-timeout", "10", "bot.web.app:create_app()"],
        env=env, preexec_fn=_die_with_parent(signal.SIGTERM))}
    if not args.no_worker:
        # SIGKILL: a worker whose serve is gone must not go on running jobs nobody supervises;
        # the next worker's start reports them interrupted.
        children["worker"] = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env,
                                              preexec_fn=_die_with_parent(signal.SIGKILL))
    print(f"ka-bot: serving on http://{args.host}:{args.port} "
          f"({'local mode' if cfg.local_mode else cfg.forgejo_url}; state in {cfg.state_dir})", file=sys.stderr)
    return supervise(children)


def _note_local_branch(services: Any) -> None:
    try:
        services.store.put("default_branch", services.forge.default_branch()[0])
    except KaError as exc:  # the first job says it again, where a user looks
        log.warning("local mode: %s", exc)


def _port_free(host: str, port: int) -> None:
    """Refuse, with the way out, a port that something already listens on (gunicorn would only say it
    cannot bind, and its supervisor that it exited)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = "is in use: another program (another ka-bot?) listens there" if exc.errno == errno.EADDRINUSE \
                else f"cannot be bound: {exc.strerror}"
            raise KaError(f"{host}:{port} {why}; stop it, or choose another port: ka-bot serve --port N "
                          "(./run: KA_PORT=N ./run)") from None


def supervise(children: dict[str, subprocess.Popen[bytes]]) -> int:
    """Wait for the children; forward SIGTERM/SIGINT; when one exits on its own, stop the others.

    Accepting deliveries that no worker runs would be silent loss, so a dead child makes the
    whole bot exit with an error, for systemd to restart it.
    """
    stopping = threading.Event()

    def forward(signum: int, _frame: object) -> None:
        stopping.set()
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pid, status = os.wait()
    name = next((n for n, c in children.items() if c.pid == pid), "?")
    died = not stopping.is_set()
    if died:
        log.error("%s exited (%s); stopping the bot so that it is restarted", name, _how(status))
        forward(signal.SIGTERM, None)
    for child in children.values():
        if child.pid != pid:
            _wait(child)
    return EXIT_ENVIRONMENT if died else EXIT_OK


def _how(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def _wait(child: subprocess.Popen[bytes]) -> None:
    try:
        child.wait(timeout=20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def cmd_worker(args: argparse.Namespace) -> int:
    """Run jobs and flush the outbox until stopped."""
    cfg = _config(args)
    lock = hold_worker_lock(prepare_state_dir(cfg))  # noqa: F841 - held until the process exits
    services = make_services(cfg, check=True)  # after the lock: the previous worker may still use the files
    _learn_login(services)
    tasks = build_tasks(services)
    interrupted = recover(services)
    if interrupted:
        log.warning("jobs interrupted by the last stop: %s", interrupted)
    tasks.flusher.start()
    start_dispatcher(services, tasks)  # picks up the jobs left queued, then every new one
    consumer = services.huey.create_consumer(workers=cfg.workers, worker_type="thread", periodic=True,
                                             initial_delay=0.05, max_delay=0.5, backoff=1.15)
    consumer.run()
    return EXIT_OK


def _learn_login(services: Any) -> None:
    """The bot's own login, so that its own comments never act (asked once; the config may name it)."""
    login = services.config.bot_login
    try:
        login = login or services.forge.me()
    except Exception as exc:  # a forge that is down now is asked again at the next start
        log.warning("cannot ask the forge for the bot's login (%s); set KA_BOT_LOGIN", exc)
    if login:
        services.store.put("bot_login", login)


def go_json(payload: Any) -> bytes:
    """Serialise as Forgejo does (Go ``json.MarshalIndent`` with HTML escaping)."""
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


def cmd_deliver(args: argparse.Namespace) -> int:
    """Send a sample delivery, signed as Forgejo signs, to a running bot."""
    if args.comment is not None:
        body, event, headers = _comment(args)
    elif args.file:
        body, event, headers = _sample(Path(args.file), args.event)
        body = _rewrite(body, args)
    else:
        raise BadInput("deliver: give a delivery FILE, or --comment TEXT")
    repo_url = args.repo_url or os.environ.get("KA_REPO_URL")
    if repo_url:  # local mode: the delivery describes that repository, not the sample's forge
        payload = json.loads(body)
        name = args.repo or os.environ.get("KA_REPO") or str((payload.get("repository") or {}).get("full_name"))
        body = go_json(describe(payload, name, repo_url, args.commit, args.ref))
    secret = args.secret or os.environ.get("KA_WEBHOOK_SECRET") or _secret_file()
    delivery = str(uuid.uuid4())
    headers.update({"Content-Type": "application/json", "X-Forgejo-Event": event, "X-Gitea-Event": event,
                    "X-Forgejo-Delivery": delivery, "X-Gitea-Delivery": delivery,
                    **(sign(secret.encode(), body) if secret else {})})
    try:
        res = requests.post(args.url, data=body, headers=headers, timeout=10)
    except requests.RequestException as exc:
        raise BotUnreachable(f"{args.url}: no bot answers there ({type(exc).__name__}); start it with ka-bot serve") \
            from None
    print(f"{res.status_code} {res.text.strip()}")
    return EXIT_OK if res.ok else 1


SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "samples" / "forgejo" / "payloads"


def _comment(args: argparse.Namespace) -> tuple[bytes, str, dict[str, str]]:
    """A new comment on an issue or a pull request, built on a recorded Forgejo delivery."""
    if (args.issue is None) == (args.pr is None):
        raise BadInput("deliver --comment: give --issue N or --pr N")
    name = "issue_comment-created-pr-forgejo-15-synthesized" if args.pr else "issue_comment-created-issue-gitea-1.16"
    payload = json.loads((SAMPLES / f"{name}.json").read_text())["payload"]
    number = args.pr or args.issue
    payload["comment"].update({"id": int(uuid.uuid4().int % 2**31), "body": args.comment})
    payload["comment"]["user"]["login"] = payload["sender"]["login"] = args.user
    payload["issue"]["number"] = number
    payload["is_pull"] = bool(args.pr)
    if not args.pr:
        payload["issue"]["pull_request"] = None
        payload.pop("pull_request", None)
    if args.repo:
        payload["repository"]["full_name"] = args.repo
    return go_json(payload), "issue_comment", {"X-Forgejo-Event-Type": "pull_request_comment" if args.pr
                                               else "issue_comment"}


def _secret_file() -> str | None:
    path = os.environ.get("KA_WEBHOOK_SECRET_FILE")
    return Path(path).read_text().strip() if path else None


def _sample(path: Path, event: str | None) -> tuple[bytes, str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: cannot read a delivery: {exc}") from None
    if isinstance(data, dict) and "raw_body" in data and "event" in data:
        kept = {k: v for k, v in data.get("headers", {}).items() if k.lower().endswith("event-type")}
        return data["raw_body"].encode(), data["event"], kept
    if not event:
        raise BadInput(f"{path}: a plain JSON body needs --event (push, pull_request, …)")
    return go_json(data), event, {}


def _rewrite(body: bytes, args: argparse.Namespace) -> bytes:
    """Point a sample at this bot's repository and a real commit, so the flow runs end to end."""
    if not (args.repo or args.commit or args.clone_url):
        return body
    payload = json.loads(body)
    repo = payload.setdefault("repository", {})
    if args.repo:
        repo["full_name"] = args.repo
        payload.pop("compare_url", None)  # it pointed at the sample's forge, not this repository
    if args.clone_url:
        repo["clone_url"] = args.clone_url
    if args.commit:
        if "pull_request" in payload:
            payload["pull_request"].setdefault("head", {})["sha"] = args.commit
        else:
            payload["after"] = args.commit
            payload["before"] = "0" * 40
            payload["ref"] = args.ref or "refs/heads/main"
    return go_json(payload)


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the audit log (read-only; it works while the bot runs)."""
    overrides = {"state_dir": Path(args.state_dir)} if args.state_dir else {}
    cfg = config_mod.load(Path(args.config) if args.config else None, overrides=overrides)
    path = cfg.state_dir / "ka-bot.db"
    if not path.exists():
        raise StateError(f"{path}: no bot database here (KA_STATE_DIR or --state-dir)")
    entries = Store(path).audit(host=args.host, since=_since(args.since) if args.since else None)
    for e in entries:
        if args.json:
            print(json.dumps(e, sort_keys=True))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
        where = f"{e['place'] or ''} #{e['number']}" if e["number"] else (e["place"] or "")
        print(f"{when}  {e['who'] or '-':<14} {e['event']:<8} {(e['command'] or e['verb'] or ''):<28} "
              f"{where:<18} {(e['commit_sha'] or '')[:12]:<12}  job {e['job_id']}  {e['result']}")
    return EXIT_OK


def _since(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--since {text!r}: not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def build_parser() -> argparse.ArgumentParser:
    """The ``ka-bot`` argument parser."""
    p = argparse.ArgumentParser(prog="ka-bot", description="kernel-agent webhook bot")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for name, func, text in (("serve", cmd_serve, "web app and worker together"),
                             ("worker", cmd_worker, "a worker alone (split deployments)")):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--config", metavar="FILE", help="TOML settings file (default: $KA_CONFIG)")
        s.add_argument("--state-dir", metavar="DIR", help="overrides KA_STATE_DIR")
        s.add_argument("--insecure", action="store_true", help="accept unsigned deliveries (local play only)")
        s.add_argument("--workers", type=int, help="job worker threads (default 2)")
        s.set_defaults(func=func)
    serve = sub.choices["serve"]
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes")
    serve.add_argument("--threads", type=int, default=32, help="threads per web worker (each slow client holds one)")
    serve.add_argument("--no-worker", action="store_true", help="web app only (a ka-worker.service runs the jobs)")
    d = sub.add_parser("deliver", help="send a sample delivery, signed as Forgejo signs")
    d.add_argument("file", nargs="?", help="a shared payload file (event, headers, raw_body) or a JSON body")
    d.add_argument("--comment", metavar="TEXT", help="instead of FILE: a new comment, e.g. '/ka promote ampere'")
    d.add_argument("--issue", type=int, metavar="N", help="with --comment: on issue N")
    d.add_argument("--pr", type=int, metavar="N", help="with --comment: on pull request N")
    d.add_argument("--user", default="maintainer", help="with --comment: its author (default maintainer)")
    d.add_argument("--url", default="http://127.0.0.1:8080/webhook")
    d.add_argument("--event", help="event name for a plain JSON body")
    d.add_argument("--secret", help="default: $KA_WEBHOOK_SECRET or $KA_WEBHOOK_SECRET_FILE")
    d.add_argument("--repo", help="rewrite repository.full_name (owner/name)")
    d.add_argument("--clone-url", help="rewrite repository.clone_url")
    d.add_argument("--commit", help="rewrite the pushed (or PR head) commit")
    d.add_argument("--ref", help="with --commit on a push: the branch (default: the --repo-url repository's "
                                 "default branch, else refs/heads/main)")
    d.add_argument("--repo-url", metavar="URL", help="local mode: make the delivery describe this repository (its "
                                                     "default branch, head and clone URL; no link into the sample's "
                                                     "forge); default $KA_REPO_URL")
    d.set_defaults(func=cmd_deliver)
    a = sub.add_parser("audit", help="print the audit log: every command and every job outcome")
    a.add_argument("--config", metavar="FILE", help="TOML settings file (default: $KA_CONFIG)")
    a.add_argument("--state-dir", metavar="DIR", help="overrides KA_STATE_DIR")
    a.add_argument("--host", help="only entries about this host")
    a.add_argument("--since", metavar="DATE", help="only entries since DATE (YYYY-MM-DD, or an ISO date and time, UTC)")
    a.add_argument("--json", action="store_true", help="one JSON object a line")
    a.set_defaults(func=cmd_audit)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The one error boundary of ``ka-bot``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # huey logs every task run at INFO: too much for a journal
        logging.getLogger("huey").setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except KaError as exc:
        print(f"ka-bot: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console script ``ka-bot``."""
    sys.exit(main())
