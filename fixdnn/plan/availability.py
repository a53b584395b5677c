"""Is every pin of a plan installable? Asked before the plan is shown as runnable.

In order of trust:

1. the target's own pip: ``<python> -m pip install --dry-run --report - --no-deps --ignore-installed
   --only-binary=:all: PIN...`` (pip reads its own configuration: index, extra indexes, find-links,
   certificates), or ``uv pip install --dry-run`` in a uv venv;
2. without an installer in the target: the configured index's JSON API (PEP 691, HTML PEP 503 as a
   fallback), or the configured find-links folders, with ``requests``;
3. ``--offline`` with nothing local to look at: not checked (``available`` stays None, with the reason).

Nothing is installed and nothing in the target is written (``PYTHONDONTWRITEBYTECODE=1``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from html.parser import HTMLParser

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fixdnn.facts.markers import wheel_fits
from fixdnn.model.actions import Plan
from fixdnn.plan.context import Context

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
_NO_MATCH = re.compile(r"No matching distribution found for (\S+)")


def _split_pin(pin: str) -> tuple[str, str]:
    name, version = pin.split("==", 1)
    return canonicalize_name(name.split("[", 1)[0]), version.strip()


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def wheel_matches(filename: str, name: str, version: str, tags=None) -> bool:
    """Is this file a wheel of the project and version that the target can install (``tags``: the target's
    packaging Tags; None checks name and version only)? Only wheels: plans use --only-binary."""
    return wheel_fits(filename, name, lambda v: _same_version(v, version), tags)


def _env(host) -> dict:
    env = dict(host.environ)
    env.update({"PYTHONDONTWRITEBYTECODE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"})
    return env


def _pip_dry_run(host, ctx: Context, pins: list[str]) -> tuple[int, str, str]:
    if ctx.installer == "uv":
        argv = [*ctx.installer_argv, "install", "--dry-run", "--no-deps", "--python", ctx.python or "python"]
        if ctx.offline:
            argv.append("--offline")
            argv += ctx.pip.offline_args()
    else:
        argv = [*ctx.installer_argv, "install", "--dry-run", "--quiet", "--report", "-", "--no-deps",
                "--ignore-installed", "--only-binary=:all:"]
        if ctx.offline:  # only what is on disk: file:// indexes and find-links folders
            argv += ctx.pip.offline_args()
    res = host.run([*argv, *pins], timeout=180, env=_env(host))
    return res.returncode, res.stdout, res.stderr


def _hashes_from_report(stdout: str) -> dict[str, str]:
    try:
        report = json.loads(stdout)
    except ValueError:
        return {}
    out = {}
    for item in report.get("install", []) if isinstance(report, dict) else []:
        meta = item.get("metadata") or {}
        info = (item.get("download_info") or {}).get("archive_info") or {}
        sha = (info.get("hashes") or {}).get("sha256") or (info.get("hash") or "").partition("sha256=")[2]
        if meta.get("name") and meta.get("version") and sha:
            out[f"{canonicalize_name(meta['name'])}=={meta['version']}"] = sha
    return out


def _last_error(stderr: str) -> str:
    m = _NO_MATCH.search(stderr)
    if m:
        return f"no matching wheel: {m.group(1)}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
    return errors[-1] if errors else "the installer failed"


def check_with_installer(host, ctx: Context, pins: list[str]) -> dict[str, tuple[bool, str, str | None]]:
    """{pin: (available, how, sha256)} from the target's installer; one batch, then one by one on failure."""
    label = " ".join(ctx.installer_argv[-2:] if ctx.installer == "uv" else ("pip",)) + " install --dry-run"
    rc, out, err = _pip_dry_run(host, ctx, pins)
    if rc == 0:
        hashes = _hashes_from_report(out)
        return {p: (True, f"{label} in the target", hashes.get("%s==%s" % _split_pin(p))) for p in pins}
    results = {}
    for pin in pins:
        if len(pins) == 1:
            rc1, out1, err1 = rc, out, err
        else:
            rc1, out1, err1 = _pip_dry_run(host, ctx, [pin])
        if rc1 == 0:
            hashes = _hashes_from_report(out1)
            results[pin] = (True, f"{label} in the target", hashes.get("%s==%s" % _split_pin(pin)))
        else:
            results[pin] = (False, f"{label}: {_last_error(err1)}", None)
    return results


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.files: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href") or ""
            name = href.split("#", 1)[0].rsplit("/", 1)[-1]
            sha = href.partition("#sha256=")[2] or ""
            self.files.append((name, sha))


def _index_files(url: str, name: str, verify, timeout: float) -> tuple[list[tuple[str, str]] | None, str]:
    """Files of one project on a simple index: [(filename, sha256)], or None with the reason."""
    page = url.rstrip("/") + "/" + name + "/"
    if page.startswith("file://"):
        path = page[len("file://"):]
        try:
            with open(os.path.join(path, "index.html"), encoding="utf-8") as fh:
                parser = _Links()
                parser.feed(fh.read())
            return parser.files, "the index folder"
        except OSError as exc:
            return None, f"{path}: {exc.strerror}"
    import requests

    try:
        resp = requests.get(page, headers={"Accept": JSON_ACCEPT}, timeout=timeout, verify=verify)
    except requests.RequestException as exc:
        return None, f"index not reachable ({exc.__class__.__name__})"
    if resp.status_code == 404:
        return [], "the index"
    if resp.status_code != 200:
        return None, f"index answered HTTP {resp.status_code}"
    ctype = resp.headers.get("Content-Type", "")
    if "json" in ctype:
        try:
            data = resp.json()
        except ValueError:
            return None, "index sent invalid JSON"
        return [(f.get("filename", ""), (f.get("hashes") or {}).get("sha256", "")) for f in data.get("files", [])
                if not f.get("yanked")], "the index's JSON API"
    parser = _Links()
    parser.feed(resp.text)
    return parser.files, "the index's HTML page"


def check_with_index(ctx: Context, pins: list[str], timeout: float = 15) -> dict[str, tuple[bool | None, str, str | None]]:
    """{pin: (available, how, sha256)} from the configured find-links folders and index (PEP 691 / 503)."""
    results: dict[str, tuple[bool | None, str, str | None]] = {}
    indexes: list[str] = []
    if ctx.offline:  # only what is on disk: the file:// indexes
        indexes = list(ctx.pip.local_indexes())
    elif not ctx.pip.no_index:
        # Only the indexes the target's configuration names: pip's built-in default is in pip's private
        # code, and without a pip to ask, an unconfigured index is "not checked", never guessed.
        indexes = [u for u in (ctx.pip.index_url, *ctx.pip.extra_index_urls) if u]
    verify = ctx.pip.cert or True
    for pin in pins:
        name, version = _split_pin(pin)
        found = None
        for link in (ctx.pip.local_find_links() if ctx.offline else ctx.pip.find_links):
            folder = link[len("file://"):] if link.startswith("file://") else link
            if os.path.isdir(folder):
                for fn in sorted(os.listdir(folder)):
                    if wheel_matches(fn, name, version, ctx.wheel_tags):
                        found = (True, f"find-links folder {folder}", None)
                        break
            if found:
                break
        reasons = []
        for url in indexes if not found else ():
            files, how = _index_files(url, name, verify, timeout)
            if files is None:
                reasons.append(how)
                continue
            match = next(((fn, sha) for fn, sha in files if wheel_matches(fn, name, version, ctx.wheel_tags)), None)
            if match:
                found = (True, f"{how} ({url})", match[1] or None)
                break
            reasons.append(f"{how} ({url}) has no wheel of {name} {version}")
        if found is None:
            if not indexes and not ctx.pip.find_links:
                found = (None, "not checked: --offline and no find-links folder" if ctx.offline
                         else "not checked: no index configured", None)
            elif reasons and all("not reachable" in r or "HTTP" in r for r in reasons):
                found = (None, "not checked: " + "; ".join(reasons), None)
            else:
                found = (False, "; ".join(reasons) or f"no wheel of {name} {version} in the find-links folders", None)
        results[pin] = found
    return results


class Availability:
    """``availability(pins) -> {pin: (available, how, sha256)}`` for the planner: asked once per pin."""

    def __init__(self, host, ctx: Context):
        self.host, self.ctx = host, ctx
        self.known: dict[str, tuple[bool | None, str, str | None]] = {}

    def __call__(self, pins: list[str]) -> dict[str, tuple[bool | None, str, str | None]]:
        todo = [p for p in dict.fromkeys(pins) if p not in self.known]
        if todo:
            if self.ctx.installer in ("pip", "uv") and self.ctx.installer_argv:
                self.known.update(check_with_installer(self.host, self.ctx, todo))
            else:
                self.known.update(check_with_index(self.ctx, todo))
        return {p: self.known[p] for p in pins}


def check_plan(plan: Plan, ctx: Context, host) -> Plan:
    """The plan with ``available`` / ``check`` / ``hashes`` set on every pip-install step."""
    pins = list(dict.fromkeys(p for a in plan.actions if a.kind == "pip-install" for p in a.packages))
    if not pins:
        return plan
    if ctx.installer in ("pip", "uv") and ctx.installer_argv:
        results = check_with_installer(host, ctx, pins)
    else:
        results = check_with_index(ctx, pins)
    actions = []
    notes = list(plan.notes)
    for a in plan.actions:
        if a.kind != "pip-install":
            actions.append(a)
            continue
        got = [results[p] for p in a.packages]
        available = False if any(r[0] is False for r in got) else (None if any(r[0] is None for r in got) else True)
        how = "; ".join(dict.fromkeys(r[1] for r in got))
        hashes = tuple(f"{p} sha256:{r[2]}" for p, r in zip(a.packages, got) if r[2])
        actions.append(replace(a, available=available, check=how, hashes=hashes or a.hashes))
        if available is False:
            notes.append(f"unavailable: {' '.join(a.packages)} ({how}); this step cannot run as planned")
    return replace(plan, actions=tuple(actions), notes=tuple(dict.fromkeys(notes)))


__all__ = ["Availability", "check_plan", "check_with_index", "check_with_installer", "wheel_matches"]
