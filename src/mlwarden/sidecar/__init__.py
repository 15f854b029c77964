"""The sidecar: a reverse proxy beside the model server that captures its traffic.

Map of the package, hot path first:

- `proxy`    the aiohttp forwarding path and the admin app (/metrics, /healthz, /readyz);
             it hands each exchange to the capture queue and returns.
- `grpc_proxy` the gRPC listener (grpcio's asyncio server): every method forwarded
             unchanged, v2 ModelInfer/ModelStreamInfer messages handed to the same queue.
- `capture`  the bounded queue and the background worker that samples, decodes and
             parses exchanges into records (through `mlwarden.protocols`).
- `shipper`  batches records to the detector with retries, backoff and jitter.
- `metrics`  the Prometheus metrics, one registry per sidecar.
- `config`   `SidecarConfig`, read from flags and MLWARDEN_* environment variables.

Nothing in capture or shipping can fail or slow a model request: every queue is
bounded, and what does not fit is dropped and counted by reason.
"""

from mlwarden.sidecar.config import SidecarConfig

__all__ = ["SidecarConfig"]
