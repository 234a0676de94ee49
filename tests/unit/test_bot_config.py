"""Settings: defaults → file → environment → overrides; secrets from files; refusals."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import Config, load
from ka.errors import BadInput


def test_layers(tmp_path: Path) -> None:
    conf = tmp_path / "bot.toml"
    conf.write_text('repo = "file/repo"\npublic_url = "https://file"\nworkers = 3\n')
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    cfg = load(conf, {"KA_PUBLIC_URL": "https://env", "KA_WEBHOOK_SECRET_FILE": str(secret)}, {"workers": 5})
    assert cfg.repo == "file/repo"            # file over defaults
    assert cfg.public_url == "https://env"    # environment over file
    assert cfg.workers == 5                   # overrides over everything
    assert cfg.webhook_secret == "from-file"  # secret read from a file, stripped
    assert cfg.state_dir == Config().state_dir
    assert "from-file" not in repr(cfg)


def test_config_file_from_environment(tmp_path: Path) -> None:
    conf = tmp_path / "bot.toml"
    conf.write_text('kernel_tree = "/srv/linux.git"\n')
    assert load(None, {"KA_CONFIG": str(conf)}).kernel_tree == Path("/srv/linux.git")


@pytest.mark.parametrize(("env", "error"), [
    ({}, "no webhook secret"),
    ({"KA_WEBHOOK_SECRET": "s", "KA_FORGEJO_URL": "http://f"}, "no token"),
    ({"KA_WEBHOOK_SECRET": "s", "KA_FORGEJO_URL": "http://f", "KA_FORGEJO_TOKEN": "t"}, "KA_REPO"),
])
def test_refuses_to_start(env: dict[str, str], error: str) -> None:
    with pytest.raises(BadInput, match=error):
        load(None, env).require_secret()


def test_insecure_allows_no_secret_and_local_mode() -> None:
    cfg = load(None, {}, {"insecure": True})
    cfg.require_secret()
    assert cfg.local_mode


@pytest.mark.parametrize(("env", "error"), [
    ({"KA_REPO": "noslash"}, "must be owner/name"),
    ({"KA_WORKERS": "many"}, "KA_WORKERS: workers = 'many' is not valid"),
    ({"KA_WEBHOOK_SECRET_FILE": "/nonexistent/secret"}, "cannot read the secret"),
])
def test_bad_settings(env: dict[str, str], error: str) -> None:
    with pytest.raises(BadInput, match=error):
        load(None, env)


def test_bad_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "bot.toml"
    conf.write_text('repo = "a/b"\nforge_url = "typo"\n')
    with pytest.raises(BadInput, match="unknown settings forge_url"):
        load(conf, {})


@pytest.mark.parametrize(("variable", "value", "fragment"), [
    ("KA_BODY_TIMEOUT", "0", "must be more than 0 seconds"),
    ("KA_FETCH_TIMEOUT", "-1", "must be more than 0 seconds"),
    ("KA_FETCH_IDLE_TIMEOUT", "0", "must be more than 0 seconds"),
    ("KA_MAX_BODY", "0", "must be at least 1"),
    ("KA_DELIVERY_RETENTION_DAYS", "-1", "must be 0 (keep) or more"),
    ("KA_MAX_PATCH", "huge", "not a size"),
    ("KA_CHECK_WORKERS", "0", "must be at least 1"),
])
def test_settings_that_would_break_every_delivery_or_job_are_refused(variable: str, value: str,
                                                                     fragment: str) -> None:
    with pytest.raises(BadInput, match=re.escape(fragment)):
        load(None, {variable: value})
