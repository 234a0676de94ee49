"""Bot settings, layered: defaults → config file → environment → explicit overrides (flaskr, twine).

Secrets may come from files (``KA_FORGEJO_TOKEN_FILE``, ``KA_WEBHOOK_SECRET_FILE``), so that
systemd's ``LoadCredential=`` or a 0600 file can hold them; they are never logged (see ``__repr__``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bot.events.commands import ROLES
from ka.errors import BadInput
from ka.limits import Limits

#: setting name → environment variable
ENV = {
    "forgejo_url": "KA_FORGEJO_URL",
    "forgejo_token": "KA_FORGEJO_TOKEN",
    "webhook_secret": "KA_WEBHOOK_SECRET",
    "repo": "KA_REPO",
    "state_dir": "KA_STATE_DIR",
    "kernel_tree": "KA_KERNEL_TREE",
    "public_url": "KA_PUBLIC_URL",
    "repo_url": "KA_REPO_URL",
    "max_body": "KA_MAX_BODY",
    "workers": "KA_WORKERS",
    "insecure": "KA_INSECURE",
    "check_workers": "KA_CHECK_WORKERS",
    "body_timeout": "KA_BODY_TIMEOUT",
    "fetch_timeout": "KA_FETCH_TIMEOUT",
    "fetch_idle_timeout": "KA_FETCH_IDLE_TIMEOUT",
    "delivery_retention_days": "KA_DELIVERY_RETENTION_DAYS",
    "max_patch": "KA_MAX_PATCH",
    "max_cumulative": "KA_MAX_CUMULATIVE",
    "bot_login": "KA_BOT_LOGIN",
    "ssh_config": "KA_SSH_CONFIG",
    "known_hosts": "KA_KNOWN_HOSTS",
    "gnupghome": "KA_GNUPGHOME",
    "packager": "KA_PACKAGER",
    "forge_timeout": "KA_FORGE_TIMEOUT",
    "local_permissions": "KA_LOCAL_PERMISSIONS",
    "live_timeout": "KA_LIVE_TIMEOUT",
    "live_interval": "KA_LIVE_INTERVAL",
}
SECRETS = ("forgejo_token", "webhook_secret")


@dataclass(frozen=True)
class Config:
    """Everything the bot needs to know, resolved once."""

    forgejo_url: str | None = None
    forgejo_token: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    repo: str | None = None
    state_dir: Path = Path("/var/lib/kernel-agent")
    kernel_tree: Path | None = None
    public_url: str = "http://127.0.0.1:8080"
    repo_url: str | None = None
    max_body: int = 5 * 1024 * 1024
    workers: int = 2
    insecure: bool = False
    check_workers: int = 2  # hosts checked at once within a parity job (memory: this many hosts' patches)
    body_timeout: float = 10.0  # seconds a client may take to send a delivery's body
    fetch_timeout: float = 300.0
    fetch_idle_timeout: float = 30.0  # an http(s) fetch slower than 1 byte/s for this long is given up
    delivery_retention_days: float = 30.0  # delivery bodies are dropped after this (records stay); 0 keeps them
    max_patch: str | None = None  # KA_MAX_PATCH: see ka.limits
    max_cumulative: str | None = None
    bot_login: str | None = None  # the bot's account; asked from the forge (GET /user) when unset
    forge_timeout: float = 30.0  # seconds to wait for the forge's answer (connecting: 5)
    ssh_config: Path | None = None  # ka-build, parity.canonical HOST:PATH: default ~/.ssh/config
    known_hosts: Path | None = None  # default ~/.ssh/known_hosts
    gnupghome: Path | None = None  # the keyring ka-build signs packages with
    packager: str | None = None  # the packages' packager (makepkg's PACKAGER, Debian's Maintainer)
    local_permissions: str = "*=write"  # local mode only: "alice=admin,bob=read,*=write"
    live_timeout: float = 10.0  # seconds each host has to answer /ka status and the fleet page's refresh
    live_interval: float = 300.0  # the fleet page asks the hosts again after this; 0: only on /ka status

    @property
    def local_mode(self) -> bool:
        """No forge configured: writes are recorded and shown on the bot's own pages."""
        return not self.forgejo_url

    @property
    def permission_table(self) -> dict[str, str]:
        """``local_permissions`` as login → role (``*`` for everyone else)."""
        table = {}
        for item in filter(None, (p.strip() for p in self.local_permissions.split(","))):
            login, _, role = item.partition("=")
            if role.strip() not in ROLES or not login.strip():
                raise BadInput(f"KA_LOCAL_PERMISSIONS: {item!r} must be login=role, role one of {', '.join(ROLES)}")
            table[login.strip()] = role.strip()
        return table

    @property
    def ssh(self) -> Any:
        """ssh settings for build, repository and canonical-patch hosts (:class:`ka.io.ssh.SshSettings`)."""
        from ka.io.ssh import SshSettings  # paramiko only where ssh is used

        return SshSettings.from_env({}, config=str(self.ssh_config) if self.ssh_config else None,
                                    known_hosts=str(self.known_hosts) if self.known_hosts else None)

    @property
    def limits(self) -> Limits:
        """Size caps on what a commit may make the bot read."""
        return Limits.from_env({k: v for k, v in (("KA_MAX_PATCH", self.max_patch),
                                                  ("KA_MAX_CUMULATIVE", self.max_cumulative)) if v})

    @property
    def secret_bytes(self) -> bytes | None:
        return self.webhook_secret.encode() if self.webhook_secret else None

    def require_secret(self) -> None:
        """Refuse to run without a webhook secret unless ``--insecure``."""
        if not self.webhook_secret and not self.insecure:
            raise BadInput("no webhook secret: set KA_WEBHOOK_SECRET or KA_WEBHOOK_SECRET_FILE "
                           "(the same as in Forgejo's webhook settings), or pass --insecure for local play")
        if self.forgejo_url and not self.forgejo_token:
            raise BadInput("KA_FORGEJO_URL is set but no token: set KA_FORGEJO_TOKEN or KA_FORGEJO_TOKEN_FILE")
        if self.forgejo_url and not self.repo:
            raise BadInput("KA_FORGEJO_URL is set but KA_REPO (owner/name) is not")


def _convert(name: str, value: Any, origin: str) -> Any:
    kind = {f.name: f.type for f in fields(Config)}[name]
    try:
        if "Path" in str(kind):
            return Path(value) if value not in (None, "") else None
        if "int" in str(kind):
            return int(value)
        if "float" in str(kind):
            return float(value)
        if "bool" in str(kind):
            return str(value).lower() in ("1", "true", "yes", "on")
    except (TypeError, ValueError):
        raise BadInput(f"{origin}: {name} = {value!r} is not valid") from None
    return None if value == "" else str(value)


def _read_secret(path: str, var: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise BadInput(f"{var}={path}: cannot read the secret: {exc.strerror}") from None


def from_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file (keys are the setting names, e.g. ``forgejo_url``)."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInput(f"{path}: cannot read the config file: {exc}") from None
    known = {f.name for f in fields(Config)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInput(f"{path}: unknown settings {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return {k: _convert(k, v, str(path)) for k, v in data.items()}


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from ``KA_*`` variables; ``KA_<SECRET>_FILE`` reads a secret from a file."""
    found: dict[str, Any] = {}
    for name, var in ENV.items():
        if name in SECRETS and environ.get(var + "_FILE"):
            found[name] = _read_secret(environ[var + "_FILE"], var + "_FILE")
        if var in environ:
            found[name] = _convert(name, environ[var], var)
    return found


def load(file: Path | None = None, environ: Mapping[str, str] = os.environ,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Resolve the settings: defaults, then ``file`` (or ``KA_CONFIG``), then the environment, then overrides."""
    config = Config()
    path = file or (Path(environ["KA_CONFIG"]) if environ.get("KA_CONFIG") else None)
    layers = [from_file(path) if path else {}, from_env(environ), dict(overrides or {})]
    for layer in layers:
        config = replace(config, **{k: v for k, v in layer.items() if v is not None})
    if config.repo and config.repo.count("/") != 1:
        raise BadInput(f"KA_REPO={config.repo!r}: must be owner/name")
    _ = config.limits, config.permission_table  # a bad value is an error now, not in the first job
    for name in ("workers", "check_workers", "max_body"):
        if getattr(config, name) < 1:
            raise BadInput(f"{ENV[name]}={getattr(config, name)}: must be at least 1")
    if config.live_interval < 0:
        raise BadInput(f"KA_LIVE_INTERVAL={config.live_interval}: must be 0 (only on /ka status) or more")
    for name in ("body_timeout", "fetch_timeout", "fetch_idle_timeout", "forge_timeout", "live_timeout"):
        if not getattr(config, name) > 0:
            raise BadInput(f"{ENV[name]}={getattr(config, name)}: must be more than 0 seconds")
    if config.delivery_retention_days < 0:
        raise BadInput(f"KA_DELIVERY_RETENTION_DAYS={config.delivery_retention_days}: must be 0 (keep) or more")
    return config
