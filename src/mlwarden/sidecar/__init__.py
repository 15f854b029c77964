"""The sidecar: a reverse proxy beside the model server that captures its traffic.

Map of the package, hot path first:

- `forward`    the forwarding path: HTTP/1.1 framing parsed with httptools on asyncio
               protocols, a keep-alive pool to the model, bodies streamed both ways; it
               offers each exchange to capture and goes on.
- `proxy`      the process: the forwarding server, the admin app (/metrics, /healthz,
               /readyz, aiohttp), capture wired up, drain and stop.
- `grpc_proxy`  the gRPC listener (grpcio's asyncio server): every method forwarded
               unchanged, v2 ModelInfer/ModelStreamInfer messages offered to the same
               capture.
- `supervisor` the proxy's side of capture: `CaptureProcess.offer` (an O(1) append to a
               bounded queue), the non-blocking writes to the capture worker process, its
               reports applied to the metrics, its restarts; `InlineCapture` when capture
               is off (metrics only, no worker).
- `worker`     the capture worker process (`python -m mlwarden.sidecar.worker`): reads
               exchange frames, parses them, runs the shipper, reports back.
- `capture`    `Exchange`, its frame on the socket, `CaptureQueue`, and `CaptureProcessor`,
               which samples, decodes and parses exchanges into records (through
               `mlwarden.protocols`); `redact` drops or hashes fields on the way.
- `shipper`    batches records to the detector (orjson, strict JSON) with retries, backoff
               and jitter; in the worker.
- `relay`      the worker's metrics as deltas, applied in the proxy process.
- `metrics`    the Prometheus metrics, one registry per process.
- `config`     `SidecarConfig`, read from flags and MLWARDEN_* environment variables.

Nothing in capture or shipping can fail or slow a model request: capture runs in
another process, every queue is bounded, and what does not fit is dropped and
counted by reason.
"""

from mlwarden.sidecar.config import SidecarConfig

__all__ = ["SidecarConfig"]
