"""The ingest token: read from a file or the environment, compared in constant time."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlwarden.ingest_auth import bearer_header, bearer_matches, load_ingest_token

TOKEN = "tO5kQ2m9y3w8x1zV7bN4cR6dE0fG2hJ5kL8mN1pQ3sT"


def test_the_file_wins_over_the_variable_and_is_stripped(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    assert load_ingest_token(file=str(f), value="x" * 20) == TOKEN
    assert load_ingest_token(file=None, value=TOKEN) == TOKEN
    assert load_ingest_token(file=None, value=None) is None
    assert load_ingest_token(file=None, value="") is None


@pytest.mark.parametrize("content", ["", "short", "ü" * 20, "a b\tc" * 2 + "\x00" * 10])
def test_a_weak_or_unprintable_token_is_refused(tmp_path: Path, content: str) -> None:
    f = tmp_path / "token"
    f.write_text(content)
    with pytest.raises(ValueError, match="--ingest-token-file"):
        load_ingest_token(file=str(f), value=None)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--ingest-token-file .*missing: cannot read"):
        load_ingest_token(file=str(tmp_path / "missing"), value=None)


def test_only_the_exact_bearer_header_matches() -> None:
    assert bearer_matches(bearer_header(TOKEN)["Authorization"], TOKEN)
    for header in (
        None,
        "",
        TOKEN,
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN} ",
        f"bearer {TOKEN}",
        f"Basic {TOKEN}",
        "Bearer ü",
    ):
        assert not bearer_matches(header, TOKEN), header
