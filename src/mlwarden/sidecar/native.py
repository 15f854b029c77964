"""The forwarding path compiled with mypyc, when it was built from this very source.

`mlwarden.sidecar.forward` is plain, strictly typed Python. `make install` (through
`tools/build_native.py`) also compiles it with mypyc into `mlwarden.sidecar._native.forward`, a C
extension of the same code whose classes are native ones: attribute access and calls within
the module cost C, not the interpreter. Per request that is about a quarter less of the
forwarding process's CPU (`benchmarks/RESULTS.md`, "compiled forwarding path"), with the
same behaviour: it is the same source. (What differs: a native class refuses attributes it
does not declare and values of another type than declared, which this module never does.)

`forward_module()` is what the proxy uses. It returns the compiled module only when its
`SOURCE_DIGEST` (the SHA-256 of the `forward.py` it was compiled from, written into it by
the build) matches the `forward.py` installed beside this file; a compiled module built
from another version of the source would run code nobody reads, so a mismatch falls back to
the pure module with a warning that says how to rebuild. No extension (no C compiler where
it was installed, or the slim image built without it) is the pure module, silently but for
`mlwarden_sidecar_info{forwarder}`. `MLWARDEN_SIDECAR_NATIVE=0` forces the pure module.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

from mlwarden.sidecar import forward

log = logging.getLogger(__name__)

NATIVE_MODULE = "mlwarden.sidecar._native.forward"
ENV = "MLWARDEN_SIDECAR_NATIVE"


def source_digest(source: bytes) -> str:
    """What a build writes into the compiled module as SOURCE_DIGEST."""
    return hashlib.sha256(source).hexdigest()


def choose(
    native: ModuleType | None, installed_digest: str | None, *, disabled: bool
) -> tuple[ModuleType, str]:
    """(the module to use, why): the compiled one only if it was built from the installed
    source (`installed_digest`; None: the source is not there to compare, as in an image
    that ships bytecode only, and the build is trusted)."""
    if disabled:
        return forward, f"python ({ENV}=0)"
    if native is None or not str(native.__file__).endswith(tuple(EXTENSION_SUFFIXES)):
        return forward, "python (no compiled forwarder installed)"
    built_from = getattr(native, "SOURCE_DIGEST", None)
    if installed_digest is not None and built_from != installed_digest:
        return forward, (
            "python (the compiled forwarder was built from another forward.py: "
            "run `make native` to rebuild it)"
        )
    return native, "native (mypyc)"


def forward_module() -> tuple[ModuleType, str]:
    """The forwarding module for this process, and a line saying which and why."""
    disabled = os.environ.get(ENV, "").strip().lower() in ("0", "false", "no", "off")
    native: ModuleType | None = None
    if not disabled:
        try:
            native = importlib.import_module(NATIVE_MODULE)
        except ImportError:
            native = None
    source = Path(forward.__file__)
    digest = source_digest(source.read_bytes()) if source.suffix == ".py" else None
    module, why = choose(native, digest, disabled=disabled)
    if module is forward and native is not None and not disabled:
        log.warning("sidecar forwarder: %s", why)
    return module, why
