# Runs inside the *target* interpreter (Python 3.8+): stdlib only, no f-string '=' or walrus, prints JSON.
# Kept import-free of fixdnn so it can be passed with `python -c`.
import json
import os
import site
import sys
import sysconfig


def _site_dirs():
    dirs = []
    try:
        dirs.extend(site.getsitepackages())
    except Exception:
        pass
    for key in ("purelib", "platlib"):
        try:
            p = sysconfig.get_paths()[key]
        except Exception:
            continue
        if p not in dirs:
            dirs.append(p)
    return dirs


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
    cwd = os.getcwd()
    site_dirs = _site_dirs()
    try:
        user_site = site.getusersitepackages()
    except Exception:
        user_site = None
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    pythonpath_abs = [os.path.abspath(p) for p in pythonpath]
    stdlib = sysconfig.get_paths().get("stdlib", "")
    path, origins = [], []
    for entry in sys.path:
        absolute = os.path.abspath(entry) if entry else cwd
        if entry == "":
            origin = "cwd"
        elif absolute in pythonpath_abs:
            origin = "pythonpath"
        elif user_site and absolute == os.path.abspath(user_site):
            origin = "user-site"
        elif absolute in [os.path.abspath(d) for d in site_dirs]:
            origin = "site"
        elif stdlib and (absolute == stdlib or absolute.startswith(os.path.dirname(stdlib) + os.sep)):
            origin = "stdlib"
        else:
            origin = "pth"
        path.append(absolute)
        origins.append(origin)
    try:
        import importlib.util

        has_pip = importlib.util.find_spec("pip") is not None
    except Exception:
        has_pip = False
    import platform

    out = {
        "python": sys.executable,
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "platform": sys.platform,
        "machine": platform.machine(),
        "site_dirs": site_dirs,
        "user_site": user_site,
        "user_site_enabled": bool(site.ENABLE_USER_SITE),
        "sys_path": path,
        "sys_path_origins": origins,
        "cwd": cwd,
        "has_pip": has_pip,
        "markers": _markers(),
        "wheel_env": _wheel_env(),
    }
    sys.stdout.write(json.dumps(out))


main()
