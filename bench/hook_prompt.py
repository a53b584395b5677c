"""Per-prompt cost of ``fixdnn hook`` when nothing changed, against no hook and against direnv's hook.

An interactive shell (``bash -i`` / ``zsh -i``) reading commands from stdin shows a prompt, and runs
``PROMPT_COMMAND`` / ``precmd_functions``, before every line. We feed it N lines of ``:`` with an active
environment whose changes are already applied, so each prompt is the hook's steady state.
Per prompt = (time for N lines - time for 0 lines) / N, best of ``--repeat`` runs.

    python bench/hook_prompt.py [--prompts 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixdnn.shell.envfile import EnvFile, EnvOp  # noqa: E402
from fixdnn.shell.hook import snippet  # noqa: E402
from fixdnn.shell.install import install  # noqa: E402


def _run(argv: list[str], setup: str, prompts: int, env: dict[str, str], cwd: Path) -> float:
    stdin = (setup + "\n" + ":\n" * prompts).encode()
    start = time.perf_counter()
    subprocess.run(argv, input=stdin, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def per_prompt(argv: list[str], setup: str, prompts: int, repeat: int, env: dict[str, str], cwd: Path) -> float:
    full = min(_run(argv, setup, prompts, env, cwd) for _ in range(repeat))
    empty = min(_run(argv, setup, 0, env, cwd) for _ in range(repeat))
    return (full - empty) / prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        prefix = tmp_path / "env"
        (prefix / "conda-meta").mkdir(parents=True)
        install(prefix, EnvFile((EnvOp("path-prepend", "LD_LIBRARY_PATH", str(prefix / "lib")),
                                 EnvOp("set", "OMP_NUM_THREADS", "4"))))
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8", "TERM": "dumb",
               "CONDA_PREFIX": str(prefix)}
        rows = []
        shells = {"bash": ["--norc", "--noprofile", "-i"], "zsh": ["-f", "-i"]}
        for name, flags in shells.items():
            exe = shutil.which(name)
            if not exe:
                print(f"{name}: not installed, skipped")
                continue
            hook_file = tmp_path / f"hook.{name}"
            hook_file.write_text(snippet(name))
            argv = [exe, *flags]
            base = per_prompt(argv, "PS1=", args.prompts, args.repeat, env, tmp_path)
            ours = per_prompt(argv, f"PS1=; . {hook_file}", args.prompts, args.repeat, env, tmp_path)
            rows.append((name, "no hook", base))
            rows.append((name, "fixdnn hook", ours))
            direnv = shutil.which("direnv")
            if direnv:
                theirs = per_prompt(argv, f'PS1=; eval "$({direnv} hook {name})"', args.prompts, args.repeat,
                                    env, tmp_path)
                rows.append((name, "direnv hook", theirs))
            else:
                print("direnv: not installed (apt-get install -y direnv), comparison skipped")
        print(f"{args.prompts} prompts, best of {args.repeat}; environment active and already applied")
        print(f"{'shell':6} {'config':12} {'ms/prompt':>10} {'vs no hook':>11} {'overhead ms':>12}")
        base_of = {s: t for s, c, t in rows if c == "no hook"}
        for shell, config, t in rows:
            base = base_of[shell]
            print(f"{shell:6} {config:12} {t * 1e3:10.4f} {t / base:10.2f}x {(t - base) * 1e3:12.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
