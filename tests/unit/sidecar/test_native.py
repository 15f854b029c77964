"""Which forwarding module the sidecar runs (`mlwarden.sidecar.native`).

The compiled module must have been built from the very `forward.py` installed: one built
from another version would run code nobody reads. Whether the compiled module behaves as
the interpreted one is tested by running the real sidecar both ways
(tests/integration/test_sidecar_vs_nginx.py compares each with nginx).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

import pytest

from mlwarden.sidecar import forward
from mlwarden.sidecar.native import NATIVE_MODULE, choose, forward_module, source_digest

ROOT = Path(__file__).resolve().parents[3]


def compiled(digest: str | None) -> ModuleType:
    """A stand-in for the extension: what `choose` reads of it is its file and digest."""
    module = ModuleType(NATIVE_MODULE)
    module.__file__ = f"/x/forward{EXTENSION_SUFFIXES[0]}"
    if digest is not None:
        module.SOURCE_DIGEST = digest  # type: ignore[attr-defined]
    return module


def test_the_compiled_module_is_used_when_built_from_the_installed_source() -> None:
    native = compiled("abc")
    assert choose(native, "abc", disabled=False) == (native, "native (mypyc)")


def test_a_compiled_module_built_from_another_source_is_not_used() -> None:
    module, why = choose(compiled("old"), "new", disabled=False)
    assert module is forward
    assert "built from another forward.py" in why and "make native" in why
    module, _ = choose(compiled(None), "new", disabled=False)
    assert module is forward


def test_no_compiled_module_or_a_plain_python_one_or_disabled_is_the_interpreted_path() -> None:
    assert choose(None, "abc", disabled=False)[0] is forward
    plain = compiled("abc")
    plain.__file__ = "/x/forward.py"  # the build's source copy, were it left behind
    assert choose(plain, "abc", disabled=False)[0] is forward
    module, why = choose(compiled("abc"), "abc", disabled=True)
    assert module is forward and "MLWARDEN_SIDECAR_NATIVE=0" in why


def test_without_the_source_to_compare_the_build_is_trusted() -> None:
    native = compiled("abc")
    assert choose(native, None, disabled=False)[0] is native


def test_the_build_stamps_the_digest_the_sidecar_compares() -> None:
    """tools/build_native.py's stamp and SOURCE_DIGEST are the digest native.py computes of
    the installed forward.py: else a fresh build would be judged stale (or a stale one not)."""
    spec = importlib.util.spec_from_file_location("build_native", ROOT / "tools/build_native.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert Path(forward.__file__).resolve() == build.SOURCE
    assert build.digest() == source_digest(Path(forward.__file__).read_bytes())
    assert source_digest(b"") == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.skipif(
    importlib.util.find_spec(NATIVE_MODULE) is None,
    reason="no compiled forwarder in this tree: `make native` builds it (needs gcc)",
)
def test_the_build_in_this_tree_is_current_and_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    check = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "build_native.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout
    monkeypatch.delenv("MLWARDEN_SIDECAR_NATIVE", raising=False)
    module, why = forward_module()
    assert module is not forward and why == "native (mypyc)"
    assert str(module.__file__).endswith(tuple(EXTENSION_SUFFIXES))
    monkeypatch.setenv("MLWARDEN_SIDECAR_NATIVE", "0")
    assert forward_module()[0] is forward
