"""For each framework and library it needs: which file the process would really load, and why.

The dynamic loader's own rules live in :mod:`fixdnn.facts.loader`; this module adds what each framework does
before the loader is asked: torch preloads ``nvidia/<lib>/lib`` from the first ``sys.path`` entry that has
it, the JAX CUDA plugin loads ``nvidia.cudnn.__path__[0]/lib`` by full path, TensorFlow ``dlopen()``s the
SONAME from ``libtensorflow_framework.so``. cuDNN's sub-libraries are then resolved as the shim
``libcudnn.so.N`` would ``dlopen()`` them.
"""

from __future__ import annotations

from dataclasses import replace

from fixdnn.facts.elf import ElfInfo, read_elf
from fixdnn.facts.loader import LoaderEnv, loader_env_from_host, resolve, search_order
from fixdnn.knowledge.compat import Compat
from fixdnn.model.facts import Framework, LoadOutcome, TargetInfo
from fixdnn.target.host import Host, HostError

# Folder of each family inside an nvidia wheel, as torch's _preload_cuda_deps and JAX name them.
_WHEEL_FOLDER = {"cudnn": "cudnn", "cublas": "cublas", "cublasLt": "cublas", "cudart": "cuda_runtime", "nvrtc": "cuda_nvrtc"}


def soname_of(family: str, major: int) -> str:
    return f"lib{family}.so.{major}"


def _torch_candidates(host: Host, entry: str, folder: str, family: str, cuda_major: str | None) -> list[str]:
    """torch's _get_cuda_dep_paths for one sys.path entry: glob ``lib<family>.so.*[0-9]`` (any major!) in
    nvidia/<folder>/lib, then nvidia/cu<MAJ>/lib, then <folder>/lib."""
    dirs = [f"{entry}/nvidia/{folder}/lib"]
    if cuda_major:
        dirs.append(f"{entry}/nvidia/cu{cuda_major}/lib")
    dirs.append(f"{entry}/{folder}/lib")
    stem = f"lib{family}.so."
    found = []
    for directory in dirs:
        try:
            names = host.listdir(directory)
        except HostError:
            continue
        found += [f"{directory}/{n}" for n in names if n.startswith(stem) and n[-1:].isdigit()]
    return found


def _torch_preload(host: Host, target: TargetInfo, fw: Framework, family: str) -> tuple[str, int] | None:
    """The file torch's _preload_cuda_deps would ctypes-load for a family: the first candidate of the first
    sys.path entry that has any (torch stops there, whatever major it found)."""
    cuda_major = fw.cuda.split(".")[0] if fw.cuda else None
    for index, entry in enumerate(target.sys_path):
        found = _torch_candidates(host, entry.rstrip("/"), _WHEEL_FOLDER.get(family, family), family, cuda_major)
        if found:
            return found[0], index
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
        hit = _torch_preload(host, target, fw, family)
        if hit is None:
            return None, (f"torch preload: no sys.path entry has nvidia/{folders[0]}/lib/lib{family}.so.*",)
        path, index = hit
        origin = target.sys_path_origins[index] if index < len(target.sys_path_origins) else "?"
        note = f"torch preload: sys.path[{index}] ({origin}) {target.sys_path[index]} has {path}"
        loaded_as = read_elf(host, path).soname or path.rsplit("/", 1)[-1]
        if loaded_as != soname:  # e.g. a cuDNN 8 found first: preloaded, but it does not answer libcudnn.so.9
            return None, (note + f" (SONAME {loaded_as}, not {soname}: the loader still has to find {soname})",)
        return path, (note,)
    if fw.name == "paddle" and family == "cudnn" and any(n.startswith("pip CUDA libraries") for n in fw.notes):
        # FLAGS_cudnn_dir = <paddle>/../nvidia/cudnn/lib: dlopen() of that full path first, when it exists.
        dist_dir = fw.loaded_by.rsplit("/paddle/", 1)[0] if fw.loaded_by and "/paddle/" in fw.loaded_by else None
        path = f"{dist_dir}/nvidia/cudnn/lib/{soname}" if dist_dir else None
        if path and host.exists(path):
            return path, (f"Paddle: dlopen of FLAGS_cudnn_dir/{soname} = {path}",)
        return None, (f"Paddle: no {soname} in nvidia/cudnn/lib beside paddle; falls back to dlopen({soname!r})",)
    if fw.name == "jax":
        # nvidia.cudnn.__path__[0]: the first sys.path entry holding an nvidia/<folder> package.
        for index, entry in enumerate(target.sys_path):
            for folder in folders:
                pkg = f"{entry.rstrip('/')}/nvidia/{folder}"
                if host.is_dir(pkg):
                    # name the sys.path entry and where it comes from: it is the cause when it is not the
                    # environment's own site-packages (PYTHONPATH, a .pth line, the user site, the cwd)
                    origin = target.sys_path_origins[index] if index < len(target.sys_path_origins) else "?"
                    where = f"sys.path[{index}] ({origin}) {entry} holds nvidia.{folder}"
                    path = f"{pkg}/lib/{soname}"
                    if host.exists(path):
                        return path, (f"JAX plugin: {where}: loads nvidia.{folder}.__path__[0]/lib/{soname} = {path}",)
                    return None, (f"JAX plugin: {where}, but {path} is missing; falls back to dlopen({soname!r})",)
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
            forced = env.preloaded.get(soname)
            if forced is not None and forced in env.preload_labels:
                # LD_PRELOAD came first: a framework's own preload by full path maps a second copy that no
                # later DT_NEEDED or dlopen() of the SONAME binds to.
                notes = (f"{env.preload_labels[forced]} = {forced}: mapped before anything else, so it answers "
                         f"{soname} for every later load",) + notes
                path = None
            fw_env = replace(env, preloaded={**env.preloaded, soname: path}) if path else env
            res = resolve(host, soname, chain, fw_env)
            outcomes.append(LoadOutcome(fw.name, need.library, soname, res.path, res, notes,
                                        search_order(host, soname, chain, env)))
            if need.library != "cudnn" or res.path is None:
                continue
            shim = read_elf(host, res.path)
            required, optional = compat.cudnn_sets.get(need.major, ((), ()))
            shim_dir = res.path.rsplit("/", 1)[0]
            for sub in required + optional:
                if sub == "cudnn":
                    continue
                sub_soname = soname_of(sub, need.major)
                if sub in optional and not host.exists(f"{shim_dir}/{sub_soname}"):
                    # an optional one belongs to the releases that ship it beside their shim: an older shim
                    # (cuDNN 9.1 has no engines_tensor_ir) never dlopen()s a newer one found further away
                    continue
                sub_chain = ([shim] if shim.ok else []) + chain
                sub_res = resolve(host, sub_soname, sub_chain, fw_env)
                outcomes.append(LoadOutcome(fw.name, sub, sub_soname, sub_res.path, sub_res,
                                            (f"dlopen()ed by {res.path}",), search_order(host, sub_soname, sub_chain, env)))
    return tuple(outcomes)
