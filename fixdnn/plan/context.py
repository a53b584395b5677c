"""The planning context: what kind of environment, which installer works in it, how pip is configured.

Built from the facts plus read-only looks at the host: pip's configuration files and ``PIP_*`` variables
(:mod:`fixdnn.facts.pipconf`, read as pip reads them, no pip started) and, for a uv venv without pip, whether
``uv`` is on PATH. Index URLs come from the user's own pip configuration; no host name is ever written here.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from fixdnn.facts import pipconf
from fixdnn.model.facts import Facts
from fixdnn.target import ownpip


@dataclass(frozen=True)
class PipConfig:
    index_url: str | None = None  # None: pip's own default
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    no_index: bool = False
    cert: str | None = None
    source: str = ""  # how it was read

    def pip_args(self) -> tuple[str, ...]:
        """Arguments that reproduce this configuration explicitly (shown in commands, never a default host)."""
        out: list[str] = []
        if self.no_index:
            out.append("--no-index")
        for link in self.find_links:
            out += ["--find-links", link]
        return tuple(out)

    def local_indexes(self) -> tuple[str, ...]:
        """The configured indexes that are folders (file://): reading them needs no network."""
        return tuple(u for u in (self.index_url, *self.extra_index_urls) if u and is_local(u) and not self.no_index)

    def local_find_links(self) -> tuple[str, ...]:
        return tuple(link for link in self.find_links if is_local(link))

    def offline_args(self) -> tuple[str, ...]:
        """pip arguments that use only the local sources: the file:// indexes (or --no-index), local find-links."""
        local = self.local_indexes()
        out: list[str] = ["--index-url", local[0]] if local else ["--no-index"]
        for url in local[1:]:
            out += ["--extra-index-url", url]
        for link in self.local_find_links():
            out += ["--find-links", link]
        return tuple(out)


def is_local(url: str) -> bool:
    """A file:// URL or a plain path: pip reads it from disk."""
    return url.startswith("file:") or "://" not in url


@dataclass(frozen=True)
class Constraint:
    """One requirement line of a pip constraints file (PIP_CONSTRAINT, global.constraint)."""

    file: str
    line: int
    text: str


@dataclass(frozen=True)
class FrameworkInfo:
    name: str
    distribution: str
    version: str
    cuda: str | None = None
    cudnn_pin: str | None = None  # exact "nvidia-cudnn-cu13==9.24.0.43", from Requires-Dist or the compat table
    cudnn_major: int | None = None
    cudnn_minimum: str | None = None
    cudnn_wheel: str | None = None  # the wheel name for its CUDA major ("nvidia-cudnn-cu12")
    extra: str | None = None  # the extra that pulls its CUDA wheels: "and-cuda" (TF), "with-cuda" (JAX)


@dataclass(frozen=True)
class Context:
    python: str | None = None
    prefix: str | None = None
    env_kind: str = "venv"  # venv | conda | system | uv | files
    installer: str = "pip"  # pip | uv | none
    installer_argv: tuple[str, ...] = ()  # how to run it: (python, -m, pip) or (uv, pip)
    offline: bool = False
    pip: PipConfig = field(default_factory=PipConfig)
    frameworks: dict[str, FrameworkInfo] = field(default_factory=dict)
    pins: dict[str, str] = field(default_factory=dict)  # dist name -> exact version a framework declares
    installed: dict[str, str] = field(default_factory=dict)  # dist name -> installed version
    hashes: dict[str, str] = field(default_factory=dict)  # "name==version" -> sha256 (when known)
    wheel_tags: frozenset | None = None  # packaging Tags the target installs (None: not known, not checked)
    constraints: tuple[Constraint, ...] = ()  # the user's pip constraints, read from their files

    @property
    def can_fetch(self) -> bool:
        """pip can get wheels: online, or offline from local sources (file:// indexes, find-links folders)."""
        local = bool(self.pip.local_find_links() or self.pip.local_indexes())
        return self.installer != "none" and (not self.offline or local)

    def pip_args(self) -> tuple[str, ...]:
        """Installer arguments every pip step carries: offline, only the local sources."""
        return self.pip.offline_args() if self.offline else self.pip.pip_args()

    def forbidden(self, pin: str) -> str | None:
        """``file:line: text`` of the user's constraint that rules this exact pin out, or None."""
        try:
            req = Requirement(pin)
        except InvalidRequirement:
            return None
        version = pin.split("==", 1)[1].strip() if "==" in pin else None
        from packaging.utils import canonicalize_name

        for c in self.constraints:
            try:
                rule = Requirement(c.text)
            except InvalidRequirement:
                continue
            if canonicalize_name(rule.name) != canonicalize_name(req.name) or version is None:
                continue
            if rule.marker is not None and not rule.marker.evaluate({"sys_platform": "linux", "extra": ""}):
                continue
            if not rule.specifier.contains(version, prereleases=True):
                return f"{c.file}:{c.line}: {c.text}"
        return None

    @property
    def persistable(self) -> bool:
        return self.env_kind in ("venv", "conda", "uv") and bool(self.prefix)

    def namespace(self) -> dict:
        """The ``ctx.*`` placeholders rules may use."""
        return {"python": self.python or "python", "prefix": self.prefix or "", "env_kind": self.env_kind,
                "installer": self.installer, "offline": self.offline}


def _pip_config(values: dict[str, dict[str, str]], source: str) -> PipConfig:
    """The settings fixdnn uses from pip's merged ``{option: {section: value}}``; precedence: the ``PIP_*``
    variables, then ``[install]``, then ``[global]`` (as for ``pip install``)."""

    def pick(name: str) -> str | None:
        got = values.get(name, {})
        for section in (":env:", "install", "global"):
            if section in got:
                return got[section]
        return next(iter(got.values()), None)

    def many(name: str) -> tuple[str, ...]:
        v = pick(name)
        return tuple(x for x in (v or "").split() if x)

    no_index = pipconf.truthy(pick("no-index"))
    return PipConfig(pick("index-url"), many("extra-index-url"), many("find-links"), many("constraint"),
                     no_index, pick("cert"), source)


def read_pip_config(host, installer: str, prefix: str | None) -> PipConfig:
    """The configuration the installing pip will use: pip's files and ``PIP_*`` variables as pip reads them
    (:mod:`fixdnn.facts.pipconf`), no pip started. uv reads none of pip's files: its index variables only."""
    env = host.environ
    if installer == "uv":
        return PipConfig(env.get("PIP_INDEX_URL") or env.get("UV_INDEX_URL") or None,
                         tuple((env.get("PIP_EXTRA_INDEX_URL") or "").split()),
                         tuple((env.get("PIP_FIND_LINKS") or "").split()),
                         tuple((env.get("PIP_CONSTRAINT") or "").split()),
                         pipconf.truthy(env.get("PIP_NO_INDEX")), env.get("PIP_CERT"),
                         "environment (uv reads no pip.conf)")

    settings = pipconf.read(host, prefix)
    source = ", ".join(settings.files) or "no pip.conf"
    if settings.problems:
        source += "; unreadable: " + "; ".join(settings.problems)
    return _pip_config(settings.values, f"pip's configuration ({source}) and PIP_* variables")


def read_constraints(host, files: tuple[str, ...]) -> tuple[Constraint, ...]:
    """The requirement lines of the user's constraint files (local paths or file:// URLs; others skipped)."""
    out: list[Constraint] = []
    for name in files:
        path = name[len("file://"):] if name.startswith("file://") else name
        if "://" in path:
            continue
        try:
            text = host.read_text(path, limit=1 << 20)
        except Exception:
            continue
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split(" #", 1)[0].strip()
            if line and not line.startswith(("#", "-")):
                out.append(Constraint(path, n, line))
    return tuple(out)


def _is_uv_venv(host, prefix: str | None) -> bool:
    if not prefix:
        return False
    try:
        cfg = host.read_text(prefix.rstrip("/") + "/pyvenv.cfg", limit=16 << 10)
    except Exception:
        return False
    return any(line.split("=")[0].strip() == "uv" for line in cfg.splitlines())


def _exact_pins(facts: Facts) -> dict[str, str]:
    """Every exact ``==`` pin the installed frameworks declare whose marker holds for the target (under any
    of the extras it names, since a pin under an extra is still the framework's pin)."""
    from packaging.utils import canonicalize_name

    from fixdnn.facts.markers import applies, marker_env

    env = marker_env(facts.target)
    fw_dists = {fw.distribution for fw in facts.frameworks}
    out: dict[str, str] = {}
    for dist in facts.distributions:
        if dist.name not in fw_dists:
            continue
        for line in dist.requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if not applies(req.marker, env, any_extra=True):
                continue
            pins = [s.version for s in req.specifier if s.operator == "=="]
            if len(pins) == 1 and "*" not in pins[0]:
                out.setdefault(canonicalize_name(req.name), pins[0])
    return out


def frameworks_info(facts: Facts, compat) -> dict[str, FrameworkInfo]:
    out = {}
    for fw in facts.frameworks:
        need = next((n for n in fw.needs if n.library == "cudnn"), None)
        pin = need.pin if need and need.pin and "==" in need.pin else None
        cuda_major = None
        try:
            cuda_major = int(str(fw.cuda).split(".")[0]) if fw.cuda else None
        except ValueError:
            pass
        wheel = compat.wheel_for("cudnn", cuda_major) if (compat is not None and cuda_major) else None
        if pin:
            wheel = pin.split("==", 1)[0]
        extra = {"tensorflow": "and-cuda", "jax": "with-cuda"}.get(fw.name)
        out[fw.name] = FrameworkInfo(fw.name, fw.distribution, fw.version, fw.cuda, pin,
                                     need.major if need else None, need.minimum if need else None, wheel, extra)
    return out


MIN_TARGET_PIP = (22, 2)  # `pip install --dry-run --report` (what the plan's availability check runs)


def _pip_is_recent(facts: Facts) -> bool:
    """True unless the target's pip is known to predate --dry-run --report (e.g. pip 20 of Ubuntu 20.04's
    Python 3.8); read from its dist-info, no process started. Unknown counts as recent."""
    dist = facts.distribution("pip")
    if dist is None:
        return True
    try:
        release = Version(dist.version).release
    except InvalidVersion:
        return True
    return release[:2] >= MIN_TARGET_PIP


def build(facts: Facts, host=None, *, offline: bool = False, compat=None) -> Context:
    """The context for planning. ``host`` is asked about pip config and uv; without it nothing is run."""
    from fixdnn.facts.markers import wheel_tags

    t = facts.target
    kind = t.kind if t.kind in ("venv", "conda", "system", "files") else "system"
    installer = "pip" if t.has_pip and _pip_is_recent(facts) else "none"
    argv: tuple[str, ...] = (t.python, "-m", "pip") if t.python and installer == "pip" else ()
    if host is not None and not t.has_pip and _is_uv_venv(host, t.prefix):
        kind = "uv"
        uv = shutil.which("uv", path=host.env("PATH", os.defpath))
        if uv:
            installer, argv = "uv", (uv, "pip")
    own = ownpip.argv_for(t.python) if installer == "none" and host is not None and host.root is None and t.python \
        else None
    if own:
        # A target without pip (or with a pip too old for --dry-run --report) is driven by fixdnn's own pip,
        # exactly as fixdnn.repair.apply runs it.
        installer, argv = "pip", own
    pip = read_pip_config(host, installer, t.prefix) if host is not None else PipConfig()
    constraints = read_constraints(host, pip.constraints) if host is not None else ()
    return Context(
        constraints=constraints, python=t.python, prefix=t.prefix, env_kind=kind, installer=installer, installer_argv=argv,
        offline=offline, pip=pip, frameworks=frameworks_info(facts, compat), pins=_exact_pins(facts),
        installed={d.name: d.version for d in facts.distributions}, wheel_tags=wheel_tags(t) or None,
    )


def from_dict(data: dict) -> Context:
    """A context from a rule case's ``context = {...}`` table (defaults: an online venv with pip)."""
    fws = {name: FrameworkInfo(name=name, distribution=v.get("distribution", name), version=v.get("version", "0"),
                               **{k: v[k] for k in ("cuda", "cudnn_pin", "cudnn_major", "cudnn_minimum",
                                                     "cudnn_wheel", "extra") if k in v})
           for name, v in dict(data.get("frameworks", {})).items()}
    pip = PipConfig(**dict(data.get("pip", {})))
    python = data.get("python", "/env/bin/python")
    installer = data.get("installer", "pip")
    return Context(python=python, prefix=data.get("prefix", "/env"), env_kind=data.get("env_kind", "venv"),
                   installer=installer,
                   installer_argv=(python, "-m", "pip") if installer == "pip" else (("uv", "pip") if installer == "uv" else ()),
                   offline=bool(data.get("offline", False)), pip=pip, frameworks=fws,
                   pins=dict(data.get("pins", {})), installed=dict(data.get("installed", {})),
                   hashes=dict(data.get("hashes", {})))
