"""For each framework and library it needs: which file the process would really load, and why.

The dynamic loader's own rules live in :mod:`fixdnn.loader`; this module adds what each framework does
before the loader is asked: torch preloads ``nvidia/<lib>/lib`` from the first ``sys.path`` entry that has
it, the JAX CUDA plugin loads ``nvidia.cudnn.__path__[0]/lib`` by full path, TensorFlow ``dlopen()``s the
SONAME from ``libtensorflow_framework.so``. cuDNN's sub-libraries are then resolved as the shim
``libcudnn.so.N`` would ``dlopen()`` them.
"""

from __future__ import annotations

from dataclasses import replace

from fixdnn.compat import Compat
from fixdnn.facts.elf import ElfInfo, read_elf
from fixdnn.facts.model import Framework, LoadOutcome, TargetInfo
from fixdnn.host import Host, HostError
from fixdnn.loader import LoaderEnv, loader_env_from_host, resolve

# Folder of each family inside an nvidia wheel, as torch's _preload_cuda_deps and JAX name them.
_WHEEL_FOLDER = {"cudnn": "cudnn", "cublas": "cublas", "cublasLt": "cublas", "cudart": "cuda_runtime", "nvrtc": "cuda_nvrtc"}


def soname_of(family: str, major: int) -> str:
    return f"lib{family}.so.{major}"


def _first_on_sys_path(host: Host, target: TargetInfo, folders: list[str], soname: str) -> tuple[str, int] | None:
    """torch's rule: for each sys.path entry in order, nvidia/<folder>/lib/<soname>; first hit wins."""
    for index, entry in enumerate(target.sys_path):
        for folder in folders:
            lib_dir = f"{entry.rstrip('/')}/nvidia/{folder}/lib"
            try:
                names = host.listdir(lib_dir)
            except HostError:
                continue
            if soname in names or any(n.startswith(soname + ".") for n in names):
                name = soname if soname in names else next(n for n in names if n.startswith(soname + "."))
                return f"{lib_dir}/{name}", index
    return None


def _torch_preloads(fw: Framework, dist_requires: tuple[str, ...]) -> bool:
    # Only the PyPI wheels (which depend on nvidia-* wheels) carry torch's sys.path preload.
    return fw.name == "torch" and any(r.startswith(("nvidia-", "cuda-toolkit")) for r in dist_requires)


def _python_preload(host: Host, target: TargetInfo, fw: Framework, family: str, major: int,
                    requires: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    soname = soname_of(family, major)
    folders = [_WHEEL_FOLDER.get(family, family)]
    if fw.cuda and family != "cudnn":
        folders.append(f"cu{fw.cuda.split('.')[0]}")
    if _torch_preloads(fw, requires):
        hit = _first_on_sys_path(host, target, folders, soname)
        if hit is None:
            return None, (f"torch preload: no sys.path entry has nvidia/{folders[0]}/lib/{soname}",)
        path, index = hit
        origin = target.sys_path_origins[index] if index < len(target.sys_path_origins) else "?"
        return path, (f"torch preload: sys.path[{index}] ({origin}) {target.sys_path[index]} has {path}",)
    if fw.name == "jax":
        # nvidia.cudnn.__path__[0]: the first sys.path entry holding an nvidia/<folder> package.
        for index, entry in enumerate(target.sys_path):
            for folder in folders:
                pkg = f"{entry.rstrip('/')}/nvidia/{folder}"
                if host.is_dir(pkg):
                    path = f"{pkg}/lib/{soname}"
                    if host.exists(path):
                        return path, (f"JAX plugin: loads nvidia.{folder}.__path__[0]/lib/{soname} = {path}",)
                    return None, (f"JAX plugin: {path} is missing; falls back to dlopen({soname!r})",)
        return None, (f"JAX plugin: no nvidia.{folders[0]} package on sys.path; falls back to dlopen({soname!r})",)
    return None, ()


def loader_env(host: Host, target: TargetInfo) -> LoaderEnv:
    """The loader's view for a process of the target's interpreter started from the user's directory."""
    executable = target.python if target.python and host.exists(target.python) else None
    return loader_env_from_host(host, cwd=target.cwd, executable=executable)


def gather(host: Host, target: TargetInfo, frameworks: tuple[Framework, ...], requires: dict[str, tuple[str, ...]],
           env: LoaderEnv, compat: Compat) -> tuple[LoadOutcome, ...]:
    outcomes: list[LoadOutcome] = []
    for fw in frameworks:
        if not fw.gpu_build:
            continue
        chain: list[ElfInfo] = [read_elf(host, fw.loaded_by)] if fw.loaded_by else []
        chain = [e for e in chain if e.ok]
        for need in fw.needs:
            soname = soname_of(need.library, need.major)
            path, notes = _python_preload(host, target, fw, need.library, need.major, requires.get(fw.distribution, ()))
            fw_env = replace(env, preloaded={**env.preloaded, soname: path}) if path else env
            res = resolve(host, soname, chain, fw_env)
            outcomes.append(LoadOutcome(fw.name, need.library, soname, res.path, res, notes))
            if need.library != "cudnn" or res.path is None:
                continue
            shim = read_elf(host, res.path)
            required, optional = compat.cudnn_sets.get(need.major, ((), ()))
            for sub in required + optional:
                if sub == "cudnn":
                    continue
                sub_soname = soname_of(sub, need.major)
                sub_chain = ([shim] if shim.ok else []) + chain
                sub_res = resolve(host, sub_soname, sub_chain, fw_env)
                outcomes.append(LoadOutcome(fw.name, sub, sub_soname, sub_res.path, sub_res,
                                            (f"dlopen()ed by {res.path}",)))
    return tuple(outcomes)
