"""Sidecar settings: one immutable object built from flags or MLWARDEN_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mlwarden.spec import PROTOCOLS, ObservedModel


def parse_hostport(value: str, *, what: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[::1]:PORT` into (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{what}: expected HOST:PORT such as 127.0.0.1:8000, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port_text)


def parse_http_url(value: str, *, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what}: expected an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def grpc_target(value: str, *, what: str) -> str:
    """`HOST:PORT` for grpcio, from `HOST:PORT` or an `http://HOST:PORT` URL (as the operator
    gives `--upstream` with `--protocol v2-grpc`)."""
    target = value.removeprefix("http://").removeprefix("grpc://").rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not host or "/" in target or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(
            f"{what}: expected HOST:PORT (or http://HOST:PORT) of the model's gRPC port, "
            f"got {value!r}"
        )
    return target


# A pod-template-hash is ~10 characters; a KServe revision name up to 63.
MAX_REVISION_LENGTH = 128


@dataclass(frozen=True)
class SidecarConfig:
    listen: tuple[str, int]
    upstream: str
    admin_listen: tuple[str, int]
    collector: str | None
    protocol: str = "auto"
    sample_rate: float = 1.0
    max_body_bytes: int = 1 << 20
    # Exchanges waiting to be parsed: a count and a byte budget, whichever binds first.
    queue_size: int = 10_000
    queue_bytes: int = 64 << 20
    batch_size: int = 500
    batch_interval_seconds: float = 1.0
    buffer_records: int = 50_000
    ship_timeout_seconds: float = 5.0
    ship_max_attempts: int = 5
    upstream_connect_timeout_seconds: float = 5.0
    upstream_read_timeout_seconds: float = 60.0
    # Client side, as nginx's client_header_timeout / client_body_timeout / worker_connections:
    # a connection must deliver a complete request head this long after it opened or after
    # its previous response (idle keep-alive included); a body must keep arriving (at most
    # this long between two reads); connections beyond the limit are answered 503 and closed.
    client_header_timeout_seconds: float = 60.0
    client_body_timeout_seconds: float = 60.0
    max_connections: int = 4096
    # Shutdown (SIGTERM): keep serving this long with /readyz failing and `Connection: close`
    # on every response, then stop accepting; in-flight requests and the last capture flush
    # then get `shutdown_timeout_seconds`. Kubernetes' default grace period is 30 s.
    drain_seconds: float = 5.0
    shutdown_timeout_seconds: float = 10.0
    # Stamped on every shipped batch as `source.modelRevision` (records-api.md).
    model_revision: str | None = None
    # A gRPC listener beside the HTTP one (sidecar/grpc_proxy.py), to the model's gRPC
    # port (HOST:PORT). With protocol v2-grpc, `listen` itself is the gRPC listener.
    grpc_listen: tuple[str, int] | None = None
    grpc_upstream: str | None = None
    observed_model: ObservedModel | None = None
    # The manifest path given (--observed-model) when no file is there: the sidecar then
    # proxies and captures nothing (`exchanges_dropped{reason="no_manifest"}`).
    manifest_missing: str | None = None
    # Sent to the detector as a bearer token; keys the HMAC of spec.capture.redact hashes.
    ingest_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"--protocol: must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}"
            )
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"--sample-rate: must be in [0, 1], got {self.sample_rate}")
        for name in (
            "max_body_bytes",
            "queue_size",
            "queue_bytes",
            "batch_size",
            "buffer_records",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.model_revision is not None and not (
            0 < len(self.model_revision) <= MAX_REVISION_LENGTH
            and self.model_revision.isprintable()
        ):
            raise ValueError(
                f"--model-revision: must be 1 to {MAX_REVISION_LENGTH} printable characters, "
                f"got {self.model_revision!r}"
            )
        if (self.grpc_listen is None) != (self.grpc_upstream is None):
            raise ValueError(
                "--grpc-listen and --grpc-upstream: give both (a gRPC listener and the model's "
                "gRPC port it forwards to) or neither"
            )
        if self.grpc_upstream is not None:
            grpc_target(self.grpc_upstream, what="--grpc-upstream")
        if self.protocol == "v2-grpc":
            grpc_target(self.upstream, what="--upstream (with --protocol v2-grpc)")
        if self.grpc_listen is not None and self.protocol == "v2-grpc":
            raise ValueError(
                "--grpc-listen: with --protocol v2-grpc, --listen is already the gRPC listener "
                "(to --upstream); drop --grpc-listen and --grpc-upstream"
            )
        if self.batch_interval_seconds <= 0:
            raise ValueError("batch interval must be positive")
        for flag, value in (
            ("--client-header-timeout", self.client_header_timeout_seconds),
            ("--client-body-timeout", self.client_body_timeout_seconds),
        ):
            if not value > 0:
                raise ValueError(f"{flag}: must be a positive number of seconds, got {value}")
        if not self.drain_seconds >= 0:
            raise ValueError(f"--drain-seconds: must be 0 or more, got {self.drain_seconds}")
        if not self.shutdown_timeout_seconds > 0:
            raise ValueError(
                "--shutdown-timeout: must be a positive number of seconds, "
                f"got {self.shutdown_timeout_seconds}"
            )

    @property
    def records_url(self) -> str | None:
        """The detector's ingest endpoint: the collector URL, plus /v1/records if it has no path."""
        if self.collector is None:
            return None
        return self.collector if urlsplit(self.collector).path else self.collector + "/v1/records"
