"""The full loop on a real arm64 host: ka-promote → ka-build → ka-install → ``uname -r``.

Everything is real and on this machine: a build host and a repository/backup host are sshd
servers on loopback (the build user cross-compiles with ``aarch64-linux-gnu-``), the fleet is a
copy of this repository's sample fleet with one more host, ``virt``: QEMU's arm64 ``virt`` machine
booting through U-Boot and extlinux (``tests/support/qemuhost.py``), its kernel Linux 6.12.117 with the
sample fleet's patches (those of ``ampere``) and a small config for the machine
(``tests/samples/qemu/virt.config``).  The kernel tree is the one ``./run`` imports
(``KA_KERNEL_TREE``, default ``~/.cache/kernel-agent/linux-6.12.git``).  Run as root (sshd hosts,
the image)::

    .venv/bin/python tests/support/fullloop.py            # about 15 to 25 minutes on 2 cores; the build is most of it

Each phase's time is printed at the end (and written as JSON with ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS.parent))  # run as a script: the project root, for tests.support and ka

from ka.io.ssh import SshSettings, connect  # noqa: E402
from tests.support import qemuhost, sshhosts  # noqa: E402
from tests.support.buildlab import BuildLab, make_build_lab  # noqa: E402
from tests.support.upstreampkg import compare, listing, make_pacman_pkg  # noqa: E402

HOST = "virt"
CONFIG = TESTS / "samples/qemu/virt.config"
INCLUDES = ["arch/arm64-defconfig-fleet", "soc/rk356x-base", "subsystem/mmc-sdio-ids-bes2600", "driver/bes2600",
            "module/goodix-t5-delay", "board/pinetab2"]  # the sample host ampere's series
RELEASE = "6.12.117-virt-1"
#: an out-of-tree module, built on the host against the headers package as DKMS builds one
HELLO_C = """#include <linux/module.h>
#include <linux/init.h>

static int __init hello_init(void)
{
\tpr_info("ka-hello: built against the headers package, loaded on %s\\n", THIS_MODULE->name);
\treturn 0;
}

static void __exit hello_exit(void)
{
}

module_init(hello_init);
module_exit(hello_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kernel-agent's out-of-tree module check");
"""


def manifest(source: str) -> str:
    """fleet/virt.yaml: the sample fleet's patches, a kernel for the virt machine, the QEMU host's install."""
    includes = "".join(f"  - {i}\n" for i in INCLUDES)
    return (f"description: QEMU arm64 virt machine (kernel-agent's full loop)\nbaseline:\n  ref: v6.12.117\n"
            f"apply_order: [arch, soc, subsystem, driver, module, board]\nincludes:\n{includes}"
            f"package:\n  pkgbase: linux-virt\n  config: fleet/configs/virt.config\n  source:\n    git: {source}\n"
            f"install:\n  ssh: {HOST}\n  image: Image\n  panic: 10\n  trial_boot: uboot-script\n"
            "  trial_state: /boot/state\n  commands:\n    prefix: []\n    mkinitcpio: [ka-mkinitramfs]\n"
            "    reboot: [reboot]\n  heartbeat:\n    down: 120\n    up: 300\n")


def infra(lab: BuildLab, apt: Path | None = None) -> str:
    """The lab's machines; with ``apt``, an apt repository in that folder, which the guest reaches over HTTP as
    http://10.0.2.100 (a guestfwd relay to a server on loopback)."""
    repo, backups = lab.ssh.user_folder("loop", "repo"), lab.ssh.user_folder("loop", "backups")
    work = lab.ssh.user_folder("loop", "builds")
    served = (f"apt_repository:\n  ssh: hertz\n  path: {apt}\n  name: fleet\n  url: http://10.0.2.100\n"
              f"  key: {lab.fingerprint}\n  gnupghome: {lab.repo_gnupghome}\n") if apt else ""
    return served + (f"build_hosts:\n  - ssh: builder\n    workdir: {work}\n    cross_compile: aarch64-linux-gnu-\n"
                     f"repository:\n  ssh: hertz\n  path: {repo}\n  name: fleet\n  url: file://{repo}\n"
                     f"  key: {lab.fingerprint}\n  gnupghome: {lab.repo_gnupghome}\n"
                     f"backup:\n  ssh: hertz\n  path: {backups}\n")


def fleet(work: Path, lab: BuildLab, virt: bool = True, apt: Path | None = None) -> Path:
    """This repository's fleet/ and patches/ (as git has them), plus host virt (unless not ``virt``), committed."""
    root = work / "fleet"
    tracked = subprocess.run(["git", "-C", str(TESTS.parent), "ls-files", "fleet", "patches"], capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(TESTS.parent / name, root / name)
    if virt:
        (root / "fleet/virt.yaml").write_text(manifest(lab.source))
        shutil.copy(CONFIG, root / "fleet/configs/virt.config")
    (root / "fleet/infra.yaml").write_text(infra(lab, apt))
    ampere = root / "fleet/ampere.yaml"  # the fleet's builds take the source from the lab's mirror
    ampere.write_text(ampere.read_text().replace("package:\n", f"package:\n  source:\n    git: {lab.source}\n", 1))
    commit(root, "the sample fleet" + (" and host virt" if virt else ""), init=True)
    return root


def commit(root: Path, message: str, init: bool = False) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Loop", "GIT_AUTHOR_EMAIL": "loop@example.org",
           "GIT_COMMITTER_NAME": "Loop", "GIT_COMMITTER_EMAIL": "loop@example.org"}
    for argv in ([["init", "-q"]] if init else []) + [["add", "-A"], ["commit", "-qm", message]]:
        subprocess.run(["git", "-C", str(root), *argv], check=True, env=env, capture_output=True)


def host_add(lab: BuildLab, tree: Path, repo: Path) -> None:
    """``ka host add virt --ssh virt --like ampere``: the manifest and config from the booted board; then the
    review a maintainer does for a board without an initramfs tool (host add says the kernel must mount
    its root by itself): the carried Debian config, whose root path is modules, replaced by the small
    virt.config whose root path is built in.  Both files committed."""
    ka(lab, tree, "host", repo, "add", HOST, "--ssh", HOST, "--like", "ampere", host_arg=False)
    print((repo / f"fleet/{HOST}.yaml").read_text(), flush=True)
    carried = (repo / f"fleet/configs/{HOST}.config").read_text()
    print("".join(line + "\n" for line in carried.splitlines() if line.startswith("# ") and "CONFIG_" not in line))
    shutil.copy(CONFIG, repo / f"fleet/configs/{HOST}.config")
    commit(repo, f"fleet: add {HOST} (ka host add), config reduced to virt.config")


def join(vm: qemuhost.Vm, lab: BuildLab, pacman: bool = True) -> None:
    """The VM as ssh host ``virt`` of the lab; its pacman trusts the fleet's key (apt's is ka-install's to add)."""
    vm.join(lab.ssh.config, lab.ssh.known_hosts, HOST)
    if pacman:
        qemuhost.trust_key(SshSettings(lab.ssh.config, lab.ssh.known_hosts), HOST, lab.gnupghome, lab.fingerprint)


def ka(lab: BuildLab, tree: Path, verb: str, repo: Path, *args: str, host_arg: bool = True) -> None:
    """``ka-<verb> virt`` as a user runs it, its progress shown; a failure ends the loop."""
    env = {**lab.env(), "KA_KERNEL_TREE": str(tree)}
    res = subprocess.run([sys.executable, "-m", "ka", verb, *([HOST] if host_arg else []), *args, "--repo", str(repo)],
                         env=env, cwd=repo)
    if res.returncode != 0:
        raise SystemExit(f"fullloop: ka {verb} {HOST} failed (exit {res.returncode})")


class Phases:
    """Wall-clock time per phase, printed as it goes."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def __call__(self, name: str, action: Callable[[], Any]) -> Any:
        print(f"fullloop: {name} …", flush=True)
        start = time.monotonic()
        got = action()
        self.times[name] = round(time.monotonic() - start, 1)
        print(f"fullloop: {name} took {self.times[name]:.1f}s", flush=True)
        return got


def module_on_host(lab: BuildLab, repo: Path) -> str:
    """Install the headers package on the host, build an out-of-tree module there with the host's own gcc
    against ``/usr/lib/modules/$(uname -r)/build``, load it and return its line from the kernel log."""
    headers = next((repo / "out" / HOST).glob("linux-virt-headers-*.pkg.tar.zst"))
    with connect(SshSettings(lab.ssh.config, lab.ssh.known_hosts), HOST) as host:
        for path in (headers, headers.with_name(headers.name + ".sig")):  # pacman checks the signature
            host.sftp.put(str(path), f"/root/{path.name}")
        host.run(["pacman", "-U", "--noconfirm", f"/root/{headers.name}"], timeout=900)
        host.run(["mkdir", "-p", "/root/hello"])
        for name, text in (("hello.c", HELLO_C), ("Kbuild", "obj-m := hello.o\n")):
            with host.sftp.open(f"/root/hello/{name}", "w") as fh:
                fh.write(text)
        release = host.run(["uname", "-r"]).output.strip()
        build = f"/usr/lib/modules/{release}/build"
        made = host.run(["make", "-C", build, "M=/root/hello", "modules"], timeout=3600, check=False)
        print(made.output[-3000:], flush=True)
        if not made.ok:
            raise SystemExit(f"fullloop: the module did not build against {build} on {HOST}")
        host.run(["insmod", "/root/hello/hello.ko"], timeout=120)
        line = next((ln for ln in host.run(["dmesg"]).output.splitlines() if "ka-hello:" in ln), "")
    if "loaded on hello" not in line:
        raise SystemExit(f"fullloop: hello.ko loaded, but its line is not in the kernel log on {HOST}")
    print(f"fullloop: {line.strip()}")
    return line.strip()


def upstream_pacman_pkg(lab: BuildLab, repo: Path) -> dict[str, list[str]]:
    """The kernel's own ``make pacman-pkg`` (headers too) of the same patched tree and final .config, built
    as the build user; its file list against ours (``tests/support/upstreampkg.py``)."""
    out = repo / "out" / HOST
    ours = sorted(out.glob("linux-virt-*.pkg.tar.zst"))
    headers = next(p for p in ours if "-headers-" in p.name)
    config = subprocess.run(["bsdtar", "-xOf", str(headers), "usr/src/linux-virt/.config"], capture_output=True,
                            check=True).stdout
    try:
        theirs = make_pacman_pkg(Path(lab.source.removeprefix("file://")), "v6.12.117",
                                 out / f"{HOST}-cumulative.patch", config, lab.ssh.user_folder("loop", "upstream"),
                                 sshhosts.USER)
    except RuntimeError as exc:
        raise SystemExit(f"fullloop: {exc}") from None
    mine = {n for p in ours for n in listing(p)}
    upstream = {n for p in theirs for n in listing(p)}
    missing, extra = compare(mine, upstream, "linux-virt", "linux-upstream", RELEASE)
    print(f"fullloop: make pacman-pkg made {', '.join(p.name for p in theirs)}: {len(upstream)} entries, ours "
          f"{len(mine)}; theirs missing from ours: {missing or 'none'}; ours beyond the documented list: "
          f"{extra or 'none'}", flush=True)
    if missing or extra:
        raise SystemExit("fullloop: our packages and make pacman-pkg's differ beyond the documented list")
    return {"missing": missing, "extra": extra}


def check_tools(tree: Path) -> None:
    missing = [t for t in ("aarch64-linux-gnu-gcc", "flex", "bison", "bc", "makepkg", "qemu-system-aarch64")
               if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"fullloop: missing {', '.join(missing)}: run scripts/setup loop (as root)")
    if subprocess.run(["git", "-C", str(tree), "rev-parse", "-q", "--verify", "v6.12.117^{commit}"],
                      capture_output=True).returncode != 0:
        raise SystemExit(f"fullloop: {tree} has no v6.12.117: run ./run promote once (it imports Debian's "
                         "linux-source-6.12), or set KA_KERNEL_TREE")
    if os.geteuid() != 0:
        raise SystemExit("fullloop: run as root (it starts sshd hosts and builds the QEMU host's image)")


def loop(work: Path, tree: Path, added: bool = False, deb: bool = False) -> dict[str, float]:
    """Run the whole loop in ``work``; the time of each phase.  ``deb``: the Debian flavour of the host, its
    kernel a .deb that ka-build publishes with reprepro and ka-install takes from the apt repository."""
    phase = Phases()
    img = phase("image", lambda: qemuhost.image(flavour="deb" if deb else "pacman-gcc"))
    lab_ssh = sshhosts.make_lab()
    apt = lab_ssh.user_folder("loop", "apt") if deb else None
    port = qemuhost.free_port()
    vm = qemuhost.Vm(img, work / "vm", guestfwd=[qemuhost.http_forward(port, work / "relay")] if apt else [])
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(apt),
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if apt else None
    lab: BuildLab | None = None
    try:
        phase("boot the host", lambda: vm.start().wait_ssh())
        for number, name in ((31, "builder"), (32, "hertz")):
            lab_ssh.add(name, number)
        (work / "lab").mkdir(exist_ok=True)
        source = SimpleNamespace(bare=tree)  # make_build_lab copies the tree for the build user
        lab = phase("keys and kernel source", lambda: make_build_lab(lab_ssh, source, work / "lab"))  # type: ignore[arg-type]
        join(vm, lab, pacman=not deb)
        repo = fleet(work, lab, virt=not added, apt=apt)
        if added:
            phase("ka host add", lambda: host_add(lab, tree, repo))
        phase("ka-promote", lambda: ka(lab, tree, "promote", repo))
        phase("ka-build", lambda: ka(lab, tree, "build", repo))
        phase("ka-install", lambda: ka(lab, tree, "install", repo))
        with connect(SshSettings(lab.ssh.config, lab.ssh.known_hosts), HOST) as host:
            running = host.run(["uname", "-r"]).output.strip()
        print(f"fullloop: {HOST} runs {running}")
        if deb:
            if not running.startswith("6.12.117"):
                raise SystemExit(f"fullloop: {HOST} runs {running}, not the 6.12.117 kernel ka-build made")
            return phase.times
        if running != RELEASE:
            raise SystemExit(f"fullloop: {HOST} runs {running}, not {RELEASE}, the kernel ka-build made")
        phase("module built on the host against the headers, loaded", lambda: module_on_host(lab, repo))
        phase("make pacman-pkg of the same tree and config, compared", lambda: upstream_pacman_pkg(lab, repo))
        return phase.times
    finally:
        if server is not None:
            server.kill()
        vm.stop()
        shutil.copy(vm.serial, work / "serial.log") if vm.serial.exists() else None
        lab_ssh.stop()
        if lab is not None:
            lab.stop_agents()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="a folder for the loop's files (default: a new one in /tmp)")
    parser.add_argument("--json", type=Path, help="write the phases' times here")
    parser.add_argument("--host-add", action="store_true", help="host virt written by ka host add from the booted "
                        "board (the config then reduced to virt.config), not by this script")
    parser.add_argument("--deb", action="store_true", help="the Debian flavour of the host: a .deb from an apt "
                        "repository (implies --host-add: the manifest then says format deb)")
    args = parser.parse_args(argv)
    # a loop stopped with kill (SIGTERM) still stops its VM, sshd hosts and gpg agents: its finally runs
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tree = Path(os.environ.get("KA_KERNEL_TREE") or Path.home() / ".cache/kernel-agent/linux-6.12.git")
    check_tools(tree)
    work = (args.work or Path(tempfile.mkdtemp(prefix="ka-loop-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    times = loop(work, tree, added=args.host_add or args.deb, deb=args.deb)
    times["total"] = round(time.monotonic() - start, 1)
    print("\n| phase | seconds |\n|---|---|\n" + "".join(f"| {k} | {v:.0f} |\n" for k, v in times.items()))
    if args.json:
        args.json.write_text(json.dumps(times, indent=1))
    print(f"fullloop: the host's console is in {work / 'serial.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
