"""The sidecar: a reverse proxy beside the model server that captures its traffic.

Map of the package, hot path first:

- `forward`  the forwarding path: HTTP/1.1 framing parsed with httptools on asyncio
             protocols, a keep-alive pool to the model, bodies streamed both ways; it
             offers each exchange to the capture queue and goes on.
- `proxy`    the process: the forwarding server, the admin app (/metrics, /healthz,
             /readyz, aiohttp), capture and shipping wired up, drain and stop.
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
