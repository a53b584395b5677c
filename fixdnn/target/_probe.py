# Runs inside the *target* interpreter (Python 3.8+): stdlib only, no f-string '=' or walrus, prints JSON.
# Kept import-free of fixdnn so it can be passed with `python -I -S -c SOURCE CWD`.
#
# It runs with `-I -S` from a private empty folder, so nothing of the environment executes: no `site`
# (so no .pth `import` line, no sitecustomize / usercustomize), no PYTHONPATH, no module of the user's
# folder. The sys.path a plain `python` of this environment would have is computed instead, the way
# `site.main()` builds it: the venv's pyvenv.cfg, the user site, the site dirs, and every .pth file read
# as text. Lines a .pth would execute and customize modules are reported, never run.
import os
import site
import sys
import sysconfig


def _read_cfg(path):
    out = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if "=" in line:
                    key, _, value = line.partition("=")
                    out[key.strip().lower()] = value.strip()
    except (OSError, UnicodeError):
        pass
    return out


def _venv():
    """(venv prefix or None, include-system-site-packages) as site.venv() finds them."""
    exe_dir = os.path.dirname(os.path.abspath(sys.executable))
    site_prefix = os.path.dirname(exe_dir)
    for folder in (exe_dir, site_prefix):
        cfg = os.path.join(folder, "pyvenv.cfg")
        if os.path.isfile(cfg):
            values = _read_cfg(cfg)
            return site_prefix, values.get("include-system-site-packages", "false").lower() == "true"
    return None, True


def _path_edits(line):
    """``sys.path.insert(<int>, <str>)`` / ``sys.path.append(<str>)`` calls of an executable .pth line, as
    (index or None, path), read with ``ast`` and never run (old easy-install.pth files put entries first
    this way). Anything else in the line is only reported."""
    import ast

    try:
        tree = ast.parse(line)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    edits = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        target = node.func.value
        if not (isinstance(target, ast.Attribute) and target.attr == "path" and isinstance(target.value, ast.Name)
                and target.value.id == "sys"):
            continue
        args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
        if node.func.attr == "insert" and len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
            edits.append((args[0], args[1]))
        elif node.func.attr == "append" and len(args) == 1 and isinstance(args[0], str):
            edits.append((None, args[0]))
    return edits


def _add_pth_entries(sitedir, path, origins, known, executes, first):
    """Apply the .pth files of ``sitedir`` to ``path`` as site.addpackage() would, without running any
    of them: path lines are appended, executable lines are reported (and their literal sys.path
    edits modelled). ``first``: where index 0 of the interpreter's own sys.path is in ``path``."""
    try:
        names = sorted(n for n in os.listdir(sitedir) if n.endswith(".pth") and not n.startswith("."))
    except OSError:
        return
    for name in names:
        pth = os.path.join(sitedir, name)
        try:
            with open(pth, "rb") as fh:
                raw = fh.read(1 << 20)
        except OSError:
            continue
        text = raw.decode("utf-8", "replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line or line.startswith("#") or not line.strip():
                continue
            if line.startswith(("import ", "import\t")):
                executes.append({"file": pth, "line": number, "text": line.strip()[:200]})
                for index, entry in _path_edits(line):
                    entry = os.path.abspath(entry)
                    if entry in known:
                        continue
                    known.add(entry)
                    at = len(path) if index is None else min(first + max(index, 0), len(path))
                    path.insert(at, entry)
                    origins.insert(at, "pth")
                continue
            entry = os.path.abspath(os.path.join(sitedir, line.rstrip()))
            if entry not in known and os.path.exists(entry):
                known.add(entry)
                path.append(entry)
                origins.append("pth")


def _markers():
    # packaging.markers.default_environment(), written out: the probe may import nothing but the stdlib
    import platform

    impl = sys.implementation
    iver = "%d.%d.%d" % impl.version[:3]
    if impl.version.releaselevel != "final":
        iver += impl.version.releaselevel[0] + str(impl.version.serial)
    return {
        "implementation_name": impl.name,
        "implementation_version": iver,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }


def _wheel_env():
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (AttributeError, ValueError, OSError):
        libc = ""
    return {
        "soabi": sysconfig.get_config_var("SOABI") or "",
        "glibc": libc.split()[-1] if libc.startswith("glibc ") else "",
    }


def main():
    cwd = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
    environ = os.environ
    venv_prefix, system_site = _venv()
    prefix = venv_prefix or sys.prefix
    base_prefix = sys.base_prefix if hasattr(sys, "base_prefix") else sys.prefix
    prefixes = [prefix] + ([sys.prefix, sys.exec_prefix] if venv_prefix is None or system_site else [])
    prefixes = [p for i, p in enumerate(prefixes) if p not in prefixes[:i]]
    try:
        site_dirs = site.getsitepackages(prefixes)
    except Exception:
        site_dirs = []
    for key in ("purelib", "platlib"):  # a distribution's own scheme (Debian's dist-packages)
        try:
            extra = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix})[key]
        except Exception:
            continue
        if extra not in site_dirs:
            site_dirs.append(extra)
    user_enabled = not environ.get("PYTHONNOUSERSITE") and (venv_prefix is None or system_site)
    if hasattr(os, "geteuid") and os.geteuid() != os.getuid():
        user_enabled = False
    try:
        user_site = site.getusersitepackages()
    except Exception:
        user_site = None

    path, origins = [], []
    known = set()

    def add(entry, origin):
        entry = os.path.abspath(entry)
        if entry not in known:
            known.add(entry)
            path.append(entry)
            origins.append(origin)

    if not environ.get("PYTHONSAFEPATH") or sys.version_info < (3, 11):
        add(cwd, "cwd")  # `python -c` / the REPL: the current folder comes first
    for entry in environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry:
            add(os.path.join(cwd, entry), "pythonpath")
    for entry in sys.path:  # -I -S: the standard library only
        if entry:
            add(entry, "stdlib")
    executes = []
    first = 1 if origins and origins[0] == "cwd" else 0  # the folder joins sys.path after site ran
    for folder, origin in ([(user_site, "user-site")] if user_enabled and user_site else []) + \
            [(d, "site") for d in site_dirs]:
        if os.path.isdir(folder):
            add(folder, origin)
            _add_pth_entries(folder, path, origins, known, executes, first)
    for module in ("sitecustomize", "usercustomize"):
        for entry, origin in zip(path, origins):
            if origin == "cwd":
                continue  # site imports them before the current folder joins sys.path
            if os.path.isfile(os.path.join(entry, module + ".py")) or os.path.isdir(os.path.join(entry, module)):
                executes.append({"file": os.path.join(entry, module + ".py"), "line": 0,
                                 "text": "import " + module})
                break
    has_pip = any(os.path.isfile(os.path.join(entry, "pip", "__init__.py"))
                  for entry, origin in zip(path, origins) if origin != "cwd")
    import platform

    out = {
        "python": sys.executable,
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "prefix": prefix,
        "base_prefix": base_prefix,
        "platform": sys.platform,
        "machine": platform.machine(),
        "site_dirs": site_dirs,
        "user_site": user_site,
        "user_site_enabled": bool(user_enabled),
        "sys_path": path,
        "sys_path_origins": origins,
        "cwd": cwd,
        "has_pip": has_pip,
        "executes": executes,
        "markers": _markers(),
        "wheel_env": _wheel_env(),
    }
    sys.stdout.write(_json(out))


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _u(code):
    """A code point as json.dumps escapes it (above U+FFFF: a surrogate pair)."""
    if code > 0xFFFF:
        code -= 0x10000
        return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))
    return "\\u%04x" % code


def _json(value):
    """``json.dumps(value)`` for the plain values the probe prints (dict, list, str, int, float, bool,
    None), written out: importing json (with re and enum) was a third of the probe's start-up."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(c) or (c if " " <= c < "\x7f" else _u(ord(c))) for c in value) + '"'
    if isinstance(value, dict):
        return "{" + ", ".join(_json(str(k)) + ": " + _json(v) for k, v in value.items()) + "}"
    return "[" + ", ".join(_json(v) for v in value) + "]"


main()
