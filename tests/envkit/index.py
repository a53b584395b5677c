"""A local package index for tests: tiny real wheels, served on 127.0.0.1. Never the network.

API (shared by the plan and apply tests; keep it small)::

    with LocalIndex(tmp_path / "index") as index:          # starts an HTTP server in a thread
        index.add("nvidia-cudnn-cu13", "9.24.0.43",        # builds a wheel (dist-info + files)
                  libs={"nvidia/cudnn/lib/libcudnn.so.9": "libcudnn.so.9"})   # gcc-built, real ELF
        index.url          # "http://127.0.0.1:PORT/simple/"  (PEP 503 HTML; PEP 691 JSON on Accept)
        index.wheels       # the folder of wheels (usable as --find-links)
        env = pip_env(index_url=index.url)                 # os.environ without PIP_*, isolated pip config

``build_wheel(dest_dir, name, version, files=..., libs=..., requires=...)`` is also usable on its own.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import threading
import zipfile
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.envkit.elfkit import build_so

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(dest_dir: str | os.PathLike, name: str, version: str, files: dict[str, bytes | str] | None = None,
                *, libs: dict[str, str] | None = None, requires: list[str] = (),
                tag: str = "py3-none-any") -> Path:
    """Write ``<name>-<version>-<tag>.whl`` holding ``files`` (path -> content) and gcc-built ``libs``
    (path -> SONAME), with METADATA / WHEEL / RECORD. Returns the wheel's path."""
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    dist = canonicalize_name(name).replace("-", "_")
    contents: dict[str, bytes] = {k: (v.encode() if isinstance(v, str) else v) for k, v in (files or {}).items()}
    for rel, soname in (libs or {}).items():
        scratch = dest / ".build" / f"{dist}-{version}" / rel
        build_so(scratch, soname)
        contents[rel] = scratch.read_bytes()
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *[f"Requires-Dist: {r}" for r in requires]]
    contents[f"{info}/METADATA"] = ("\n".join(meta) + "\n\nA tiny wheel built by fixdnn's test kit.\n").encode()
    purelib = "true" if tag.endswith("-any") else "false"
    contents[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: fixdnn-envkit\nRoot-Is-Purelib: {purelib}\n"
                                 f"Tag: {tag}\n").encode()
    record = [f"{p},sha256={_digest(d)},{len(d)}" for p, d in contents.items()] + [f"{info}/RECORD,,"]
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = dest / f"{dist}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in contents.items():
            zf.writestr(rel, data)
    return path


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, *args, index: "LocalIndex", **kw):
        self.index = index
        super().__init__(*args, **kw)

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's name
        self.index.requests.append(self.path)
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if len(parts) == 2 and parts[0] == "wheels":
            f = self.index.wheels / parts[1]
            if f.is_file():
                return self._send(200, f.read_bytes(), "application/octet-stream")
            return self._send(404, b"not found", "text/plain")
        if len(parts) == 2 and parts[0] == "simple":
            name = canonicalize_name(parts[1])
            files = self.index.files_of(name)
            if not files:
                return self._send(404, b"not found", "text/plain")
            if JSON_TYPE in (self.headers.get("Accept") or ""):
                data = {"meta": {"api-version": "1.1"}, "name": name,
                        "files": [{"filename": f.name, "url": f"../../wheels/{f.name}",
                                   "hashes": {"sha256": hashlib.sha256(f.read_bytes()).hexdigest()}} for f in files]}
                return self._send(200, json.dumps(data).encode(), JSON_TYPE)
            links = "".join(f'<a href="../../wheels/{html.escape(f.name)}#sha256='
                            f'{hashlib.sha256(f.read_bytes()).hexdigest()}">{html.escape(f.name)}</a>\n' for f in files)
            return self._send(200, f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode(), "text/html")
        if parts == ["simple"]:
            names = sorted({canonicalize_name(f.name.split("-")[0]) for f in self.index.wheels.glob("*.whl")})
            body = "".join(f'<a href="{n}/">{n}</a>\n' for n in names)
            return self._send(200, f"<html><body>\n{body}</body></html>\n".encode(), "text/html")
        return self._send(404, b"not found", "text/plain")


class LocalIndex:
    """A PEP 503 / PEP 691 index of generated wheels on 127.0.0.1 (a thread; stopped on exit)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.wheels = self.root / "wheels"
        self.wheels.mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []  # paths asked for, to assert what was queried
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, name: str, version: str, **kw) -> Path:
        return build_wheel(self.wheels, name, version, **kw)

    def files_of(self, name: str) -> list[Path]:
        return sorted(f for f in self.wheels.glob("*.whl") if canonicalize_name(f.name.split("-")[0]) == name)

    def folder_url(self) -> str:
        """Write the index as static PEP 503 pages next to the wheels (a local mirror): its file:// URL,
        which pip (and fixdnn --offline) read without any network."""
        simple = self.root / "simple"
        names = sorted({canonicalize_name(f.name.split("-")[0]) for f in self.wheels.glob("*.whl")})
        for name in names:
            page = simple / name / "index.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            links = "".join(f'<a href="../../wheels/{html.escape(f.name)}#sha256='
                            f'{hashlib.sha256(f.read_bytes()).hexdigest()}">{html.escape(f.name)}</a>\n'
                            for f in self.files_of(name))
            page.write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
        return f"file://{simple}/"

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LocalIndex is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple/"

    def start(self) -> "LocalIndex":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, index=self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "LocalIndex":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def pip_env(base: dict | None = None, *, index_url: str | None = None, config_file: str = os.devnull,
            **extra: str) -> dict:
    """An environment for pip isolated from the machine: no PIP_* variables, PIP_CONFIG_FILE=/dev/null
    (or ``config_file``), no version check, no cache; optionally PIP_INDEX_URL."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(("PIP_", "UV_"))}
    env.update({"PIP_CONFIG_FILE": config_file, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1",
                "PIP_NO_INPUT": "1"})
    if index_url:
        env["PIP_INDEX_URL"] = index_url
    env.update(extra)
    return env


__all__ = ["LocalIndex", "build_wheel", "pip_env"]
