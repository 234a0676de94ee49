"""extlinux.conf, as U-Boot reads it: kernel-agent's two entries written, the owner's lines kept.

ka-install owns two labels and two global lines::

    default kernel-agent                  # the new kernel, with panic=<s> so a panic reboots
    fallback kernel-agent-previous        # the kept one: *.ka-prev files

U-Boot boots ``default``; when that label cannot be loaded it tries the other labels in order,
and with its bootcount (``altbootcmd`` setting the extlinux bootmeth's ``fallback`` option) a
kernel that keeps failing to come up makes it boot ``fallback``.  Everything else in the file
(other labels, ``timeout``, ``menu`` lines, comments) is kept as the owner wrote it; the
command line of the new entries is taken from the entry that booted so far (``append``, minus
``panic=``).  Keywords are case-insensitive, as U-Boot lowercases them.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

from ka.errors import BadInput

LABEL = "kernel-agent"
PREVIOUS = "kernel-agent-previous"
PREV_SUFFIX = ".ka-prev"
MARK = "# kernel-agent writes the labels kernel-agent and kernel-agent-previous and the default and " \
       "fallback lines; everything else is kept as written"
_PANIC = re.compile(r"(^|\s)panic=\S*")


class ExtlinuxError(BadInput):
    """The config cannot be used: no entry to take the command line from, or unreadable."""


#: what U-Boot reads inside a label; any other keyword ends the label (``default`` after the labels is global)
LABEL_WORDS = frozenset({"menu", "kernel", "linux", "fit", "append", "initrd", "fdt", "devicetree", "fdtdir",
                         "devicetreedir", "fdtoverlays", "devicetree-overlay", "localboot", "ipappend",
                         "kaslrseed", "say"})
#: lines of the base entry the new entries take over as they are (the file lines are written anew)
CARRIED = ("fdtoverlays", "devicetree-overlay", "kaslrseed", "ipappend")


def _keyword(line: str) -> tuple[str, str]:
    words = line.split(None, 1)
    if not words or words[0].startswith("#"):
        return "", ""
    return words[0].lower(), (words[1].strip() if len(words) > 1 else "")


def _menu_default(line: str) -> bool:
    word, rest = _keyword(line)
    return word == "menu" and rest.split()[:1] == ["default"]


@dataclass
class Entry:
    """One ``label`` block: its name and its lines as written."""

    name: str
    lines: list[str] = field(default_factory=list)

    def get(self, *keywords: str) -> str | None:
        """The value of the first line with one of ``keywords`` (``kernel`` or ``linux``, …)."""
        for line in self.lines[1:]:
            word, rest = _keyword(line)
            if word in keywords:
                return rest
        return None

    @property
    def kernel(self) -> str | None:
        return self.get("linux", "kernel")


@dataclass
class Config:
    """A parsed extlinux.conf."""

    header: list[str]
    entries: list[Entry]
    order: list[str | Entry] = field(default_factory=list)  # the global lines and the labels as they came

    def _global(self, keyword: str) -> str | None:
        found = None
        for line in self.header:
            word, rest = _keyword(line)
            if word == keyword or (keyword == "default" and word == "ontimeout"):
                found = rest
        return found

    @property
    def default(self) -> str | None:
        """The label U-Boot boots: the last ``default``/``ontimeout`` or ``menu default`` in the file."""
        found = None
        for line in self.order:
            if isinstance(line, Entry):
                found = line.name if any(_menu_default(ln) for ln in line.lines[1:]) else found
                continue
            word, rest = _keyword(line)
            found = rest.split()[0] if word in ("default", "ontimeout") and rest else found
        return found

    @property
    def fallback(self) -> str | None:
        return self._global("fallback")

    def entry(self, name: str | None) -> Entry | None:
        return next((e for e in self.entries if e.name == name), None)


def parse(text: str) -> Config:
    """Split the file into its global lines and its ``label`` blocks, as U-Boot reads them: a label
    ends at the next keyword that is not a label's (``default`` after the labels is global)."""
    header: list[str] = []
    entries: list[Entry] = []
    order: list[str | Entry] = []
    current: Entry | None = None
    for line in text.splitlines():
        word, rest = _keyword(line)
        if word == "label":
            current = Entry(rest, [line])
            entries.append(current)
            order.append(current)
        elif current is not None and (word in LABEL_WORDS or not word):
            current.lines.append(line)
        else:
            current = None
            header.append(line)
            order.append(line)
    return Config(header, entries, order)


@dataclass(frozen=True)
class Boot:
    """The files an entry boots, as the bootloader names them (paths on the boot partition)."""

    kernel: str
    initrd: str | None
    fdt: tuple[str, str] | None  # ("fdt", path) or ("fdtdir", path)
    append: str
    title: str
    extra: tuple[str, ...] = ()  # fdtoverlays, kaslrseed, … as the base entry has them


def base_entry(config: Config) -> Entry:
    """The entry whose command line the new ones take: ours, else the default, else the first."""
    found = config.entry(LABEL) or config.entry(config.default) or (config.entries[0] if config.entries else None)
    if found is None or not found.kernel:
        raise ExtlinuxError("has no label with a kernel (linux or kernel line) to take the command line and the "
                            "boot partition's paths from; write one entry that boots the current kernel first")
    return found


def boot_dir(entry: Entry) -> str:
    """Where the boot folder's files are, as the bootloader sees them (``/`` for a boot partition)."""
    kernel = entry.kernel or "/"
    return posixpath.dirname(kernel.split()[0]).rstrip("/") + "/"


def layout(config: Config, image: str, initramfs: str | None, panic: int, titles: tuple[str, str]) -> tuple[Boot, Boot]:
    """The new entry (``image``, ``initramfs``) and the previous one: the base entry's files, kept as ``*.ka-prev``."""
    base = base_entry(config)
    where = boot_dir(base)
    append = " ".join(_PANIC.sub(" ", base.get("append") or "").split())
    fdt = _fdt(base)
    prev_fdt = None if fdt is None else (fdt[0], _prev_dtbs(fdt[1], where))
    kernel, initrd = booted(base)
    extra = tuple(f"{w} {r}".strip() for w, r in (_keyword(ln) for ln in base.lines[1:]) if w in CARRIED)
    prev_extra = tuple(" ".join(_prev_dtbs(p, where) for p in ln.split()) for ln in extra)
    new = Boot(where + image, where + initramfs if initramfs else None, fdt,
               f"{append} panic={panic}".strip(), titles[0], extra)
    prev = Boot(kernel + PREV_SUFFIX, initrd + PREV_SUFFIX if initrd else None, prev_fdt, append, titles[1],
                prev_extra)
    return new, prev


def booted(entry: Entry) -> tuple[str, str | None]:
    """The kernel and the initrd an entry boots (bootloader paths)."""
    kernel = (entry.kernel or "").split()[0]
    initrd = (entry.get("initrd") or "").split()
    if initrd and "," in initrd[0]:
        raise ExtlinuxError(f"label {entry.name}: more than one initrd ({initrd[0]}) is not supported")
    return kernel, initrd[0] if initrd else None


def kept(config: Config, where_on_host: str) -> list[tuple[str, str, str]]:
    """What to copy to ``*.ka-prev`` names on the host: (role, path, copy) for the base entry's
    files: ``kernel``, ``initrd``, and ``dtbs`` (the folder) when its device tree is in it."""
    base = base_entry(config)
    where = boot_dir(base)
    kernel, initrd = booted(base)
    paths = [("kernel", kernel), *([("initrd", initrd)] if initrd else [])]
    fdt = _fdt(base)
    if fdt and _prev_dtbs(fdt[1], where) != fdt[1]:
        paths.append(("dtbs", where + "dtbs"))
    return [(role, on_host(p, where, where_on_host), on_host(p, where, where_on_host) + PREV_SUFFIX)
            for role, p in paths]


def pairs(config: Config, where_on_host: str) -> list[tuple[str, str, str]]:
    """(role, file of the default entry, file of the previous entry) for kernel-agent's two entries."""
    new, prev = config.entry(LABEL), config.entry(PREVIOUS)
    if new is None or prev is None or not new.kernel or not prev.kernel:
        raise ExtlinuxError(f"has no {LABEL} and {PREVIOUS} entries: there is no kept kernel to go back to")
    found = []
    for role, a, b in zip(("kernel", "initrd"), booted(new), booted(prev), strict=True):
        if (a is None) != (b is None):
            raise ExtlinuxError(f"{LABEL} and {PREVIOUS} do not both have an {role}")
        if a and b:
            found.append((role, on_host(a, boot_dir(new), where_on_host), on_host(b, boot_dir(prev), where_on_host)))
    fdt_new, fdt_prev = _fdt(new), _fdt(prev)
    where = boot_dir(new)
    if fdt_new and fdt_prev and fdt_prev[1] != fdt_new[1] and _prev_dtbs(fdt_new[1], where) == fdt_prev[1]:
        found.append(("dtbs", on_host(where + "dtbs", where, where_on_host),
                      on_host(where + "dtbs" + PREV_SUFFIX, where, where_on_host)))
    return found


def on_host(path: str, where: str, boot: str) -> str:
    """A bootloader path (``/Image`` on a boot partition) as a path on the host (``/boot/Image``)."""
    if not path.startswith(where):
        raise ExtlinuxError(f"{path} is not in the boot folder the entry's kernel is in ({where})")
    return posixpath.join(boot, path[len(where):])


def _fdt(base: Entry) -> tuple[str, str] | None:
    for keyword in ("fdt", "devicetree", "fdtdir", "devicetreedir"):
        value = base.get(keyword)
        if value:
            return ("fdtdir" if keyword.endswith("dir") else "fdt"), value.split()[0]
    return None


def _prev_dtbs(path: str, where: str) -> str:
    """``/dtbs/rockchip/x.dtb`` → ``/dtbs.ka-prev/rockchip/x.dtb``; a device tree elsewhere stays."""
    dtbs = where + "dtbs"
    if path == dtbs or path.startswith(dtbs + "/"):
        return dtbs + PREV_SUFFIX + path[len(dtbs):]
    return path


def _style(config: Config) -> str:
    """Write keywords in the case the owner used (``LABEL`` or ``label``)."""
    words = [line.strip().split()[0] for e in config.entries for line in e.lines[:1] if line.strip()]
    return "upper" if words and all(w.isupper() for w in words) else "lower"


def _block(name: str, boot: Boot, upper: bool) -> list[str]:
    def k(word: str) -> str:
        return word.upper() if upper else word
    lines = [f"{k('label')} {name}", f"    {k('menu')} {k('label')} {boot.title}", f"    {k('linux')} {boot.kernel}"]
    if boot.initrd:
        lines.append(f"    {k('initrd')} {boot.initrd}")
    if boot.fdt:
        lines.append(f"    {k(boot.fdt[0])} {boot.fdt[1]}")
    if boot.append:
        lines.append(f"    {k('append')} {boot.append}")
    for line in boot.extra:
        word, _, rest = line.partition(" ")
        lines.append(f"    {k(word)} {rest}".rstrip())
    return lines


def render(config: Config, new: Boot, prev: Boot, default: str = LABEL) -> str:
    """The file with kernel-agent's entries first and the owner's lines kept; ``default`` is the label to
    boot (``kernel-agent``, or ``kernel-agent-previous`` while the new kernel's files are being put in place).

    Every other ``default``, ``ontimeout`` and ``fallback`` line goes (U-Boot takes the last one), and an
    owner's ``menu default`` is kept as a comment."""
    upper = _style(config) == "upper"
    header: list[str] = []
    placed = False
    for line in config.header:
        word, _ = _keyword(line)
        if line.strip() == MARK:
            continue
        if word in ("default", "ontimeout", "fallback"):
            if not placed:
                header += _globals(upper, default)
                placed = True
            continue
        header.append(line)
    if not placed:
        header = _trimmed(header) + _globals(upper, default)
    out = [MARK, *_trimmed(header), "", *_block(LABEL, new, upper), "", *_block(PREVIOUS, prev, upper), ""]
    for entry in config.entries:
        if entry.name not in (LABEL, PREVIOUS):
            lines = [f"    # {ln.strip()}   (kernel-agent: the default is set above)" if _menu_default(ln) else ln
                     for ln in entry.lines]
            out += [*_trimmed(lines), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _globals(upper: bool, default: str) -> list[str]:
    return [f"{'DEFAULT' if upper else 'default'} {default}", f"{'FALLBACK' if upper else 'fallback'} {PREVIOUS}"]


def _trimmed(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def assumed(host: str, path: str, image: str, initramfs: str | None) -> str:
    """An extlinux.conf a dry run plans with when it cannot read the host's: one entry booting the manifest's
    image (and initramfs) from the boot partition's root; its other lines are placeholders."""
    lines = [f"# assumed by ka-install --dry-run: {host}:{path} could not be read", "DEFAULT running", "",
             "LABEL running", "    MENU LABEL the running kernel", f"    LINUX /{image}"]
    if initramfs:
        lines.append(f"    INITRD /{initramfs}")
    lines += ["    FDTDIR /dtbs", "    APPEND root=<the host's root> rw"]
    return "\n".join(lines) + "\n"


def rewrite(text: str, image: str, initramfs: str | None, panic: int, titles: tuple[str, str],
            default: str = LABEL) -> str:
    """``text`` with kernel-agent's two entries, ``default`` booting (the new kernel, unless told
    ``kernel-agent-previous``) and the kept one as ``fallback``."""
    config = parse(text)
    new, prev = layout(config, image, initramfs, panic, titles)
    return render(config, new, prev, default)


def menu(text: str, boot: str) -> tuple[str | None, dict[str, str]]:
    """An extlinux.conf's default label, and label → the image it boots (a path on the host)."""
    config = parse(text)
    return config.default, {entry.name: on_host(booted(entry)[0], boot_dir(entry), boot)
                            for entry in config.entries if entry.kernel}
