"""Where an ssh name leads, said when a host cannot be reached: the config read, or that there is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.io.ssh import SshSettings


@pytest.mark.parametrize(("config", "said"), [
    (None, "no ssh config: {config} does not exist (KA_SSH_CONFIG names another); add 'Host boltzmann' with its "
           "HostName, User and IdentityFile there"),
    ("Host fermi\n  HostName 10.0.0.2\n", "{config} has no 'Host boltzmann'; add 'Host boltzmann' with its HostName, "
                                          "User and IdentityFile"),
    ("Host boltzmann\n  HostName 10.0.0.1\n  User build\n", "from {config}"),
    ("Host *\n  User build\n", "from {config}"),  # a wildcard entry says something of every name
])
def test_the_ssh_config_is_named_with_what_it_lacks(tmp_path: Path, config: str | None, said: str) -> None:
    path = tmp_path / "ssh_config"
    if config is not None:
        path.write_text(config)
    assert SshSettings(config=path, known_hosts=tmp_path / "known_hosts").explain("boltzmann") == \
        said.format(config=path)
