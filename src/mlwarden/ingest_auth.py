"""The ingest token: the shared secret the sidecars present and the detector checks.

The operator creates one per ObservedModel (Secret `NAME-ingest-token`, key `token`); the
model's sidecars get it as MLWARDEN_INGEST_TOKEN, the detector as a file
(`--ingest-token-file`). Records are posted with `Authorization: Bearer TOKEN`; the detector
compares in constant time. The same token keys the HMAC of `spec.capture.redact` hashes, so
hashed values cannot be reversed by hashing a dictionary of guesses without it.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Final

SECRET_KEY: Final = "token"  # the key in the Secret
ENV_TOKEN: Final = "MLWARDEN_INGEST_TOKEN"
MIN_TOKEN_LENGTH: Final = 16


def ingest_token_secret_name(model_name: str) -> str:
    return f"{model_name}-ingest-token"


def load_ingest_token(*, file: str | None, value: str | None) -> str | None:
    """The token from `--ingest-token-file` (wins) or MLWARDEN_INGEST_TOKEN; None if neither.

    Raises ValueError naming the source when the token is unreadable, empty or too short.
    """
    if file:
        try:
            token = Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--ingest-token-file {file}: cannot read: {exc}") from None
        where = f"--ingest-token-file {file}"
    elif value is not None and value != "":
        token, where = value.strip(), ENV_TOKEN
    else:
        return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
        raise ValueError(
            f"{where}: an ingest token must be at least {MIN_TOKEN_LENGTH} printable ASCII "
            "characters"
        )
    return token


def bearer_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bearer_matches(header: str | None, token: str) -> bool:
    """True when `header` is exactly `Bearer TOKEN`; the comparison takes constant time."""
    presented = (header or "").encode("utf-8", "replace")
    return hmac.compare_digest(presented, f"Bearer {token}".encode())
