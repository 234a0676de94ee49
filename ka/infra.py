"""``fleet/infra.yaml``: the machines that serve the fleet, and who may operate each host.

Read with the same screened YAML loader as the manifests, so it cannot blow up either.
This part knows the ``operators`` section (host → logins allowed to install and roll back,
besides the repository's admins); the build, repository and backup hosts arrive with the
verbs that use them.
"""

from __future__ import annotations

from ka.errors import ManifestError, Problem
from ka.manifest import FLEET
from ka.repo import FILE, PathEscapes, RepoView
from ka.text import shown
from ka.yamldoc import Doc, child

INFRA = f"{FLEET}/infra.yaml"
TOP_KEYS = ("operators", "build_hosts", "repository", "backup")


def operators(view: RepoView) -> dict[str, list[str]]:
    """host → operator logins; empty when there is no infra.yaml.  Raises :class:`ManifestError`."""
    try:
        if view.kind(INFRA) != FILE:
            return {}
    except PathEscapes:
        raise ManifestError([Problem(view.display(INFRA), None, "", "is a symlink that leaves fleet/")]) from None
    doc = Doc(view.display(INFRA), view.read(INFRA).decode("utf-8", "replace"), "infra.yaml")
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise ManifestError([Problem(doc.path, 1, "", "must be a mapping of keys (" + ", ".join(TOP_KEYS) + ")")])
    doc.check_keys(doc.node, TOP_KEYS, "")
    found = _operators(doc)
    if doc.problems:
        raise ManifestError(doc.problems)
    return found


def _operators(doc: Doc) -> dict[str, list[str]]:
    value, node = doc.data.get("operators"), child(doc.node, "operators")
    if value is None:
        return {}
    if not isinstance(value, dict):
        doc.add(node, "operators", "must be a mapping of host: [logins]")
        return {}
    found: dict[str, list[str]] = {}
    for host, logins in value.items():
        where = f"operators.{shown(host, 60)}"
        if not isinstance(logins, list) or not all(isinstance(x, str) and x for x in logins):
            doc.add(child(node, str(host)) or node, where, "must be a list of logins")
            continue
        found[str(host)] = list(logins)
    return found
