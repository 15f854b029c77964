"""The peers' virtual environments: one per peer, from benchmarks/peers/requirements-<peer>.txt.

The peers' pins conflict with each other (Alibi Detect and whylogs need numpy < 2, frouros
scipy < 1.15, Evidently and NannyML pandas < 3 while frouros takes pandas 3), and with
nothing of ours may they mix: so each peer gets its own environment under
benchmarks/.peers-venv/<peer>, created on first use (or by `make bench-peers-env`) with
`python -m venv` and `pip install -r requirements-<peer>.txt`, and re-created when its
requirements file changes. An install that fails is remembered (with the end of pip's
output) so the suite can say why a peer has no figures, and retried on the next run.

    .venv/bin/python benchmarks/peers/envs.py            # create or update all of them
    .venv/bin/python benchmarks/peers/envs.py alibi      # one
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent / ".peers-venv"
PEERS = ("alibi", "evidently", "nannyml", "whylogs", "frouros")
# The base interpreter, not a venv's: `venv` from inside a venv would still work, but this
# keeps the peers' environments independent of the project's .venv.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


def requirements(peer: str) -> Path:
    return HERE / f"requirements-{peer}.txt"


def python(peer: str) -> Path:
    return ROOT / peer / "bin" / "python"


def _digest(peer: str) -> str:
    return hashlib.sha256(requirements(peer).read_bytes()).hexdigest()[:16]


def ensure(peer: str, *, quiet: bool = True) -> tuple[Path | None, str]:
    """The peer's interpreter, created if needed; (None, why) when it cannot be installed."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}: one of {', '.join(PEERS)}")
    venv = ROOT / peer
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text().strip() == _digest(peer) and python(peer).exists():
        return python(peer), "ok"
    if venv.exists():
        shutil.rmtree(venv)
    print(
        f"peers: creating {venv} from {requirements(peer).name} (a few minutes)",
        file=sys.stderr,
        flush=True,
    )
    steps = [
        [BASE_PYTHON, "-m", "venv", str(venv)],
        [str(python(peer)), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        [str(python(peer)), "-m", "pip", "install", "--quiet", "-r", str(requirements(peer))],
    ]
    for argv in steps:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            lines = [
                ln
                for ln in (out.stdout + out.stderr).splitlines()
                if ln.strip() and not ln.startswith("WARNING: Location")
            ]
            why = f"install failed: `{' '.join(argv[-3:])}` exited {out.returncode}: " + (
                lines[-1] if lines else "no output"
            )
            (ROOT / f"{peer}.failed").write_text("\n".join(lines[-40:]) + "\n")
            return None, why
    stamp.write_text(_digest(peer) + "\n")
    (ROOT / f"{peer}.failed").unlink(missing_ok=True)
    if not quiet:
        print(f"peers: {peer} ready", file=sys.stderr)
    return python(peer), "ok"


def version(peer: str, dist: str) -> str:
    """The installed version of `dist` in the peer's environment, from its requirements."""
    for line in requirements(peer).read_text().splitlines():
        name, _, ver = line.partition("==")
        if name.strip().lower().replace("_", "-") == dist.lower():
            return ver.strip()
    return "?"


def main(argv: list[str]) -> int:
    if {"-h", "--help"} & set(argv):
        usage = f"usage: envs.py [PEER ...]  (peers: {', '.join(PEERS)}; all by default)"
        print(__doc__.split("\n\n    ")[0] + "\n\n" + usage)
        return 0
    unknown = [p for p in argv if p not in PEERS]
    if unknown:
        print(f"envs.py: unknown peer {', '.join(unknown)}: one of {', '.join(PEERS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    failed = 0
    for peer in argv or PEERS:
        path, why = ensure(peer, quiet=False)
        print(f"{peer}: {path if path else why}")
        failed += path is None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
