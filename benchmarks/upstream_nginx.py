"""nginx for the benchmarks: the fixed-response model server, and the reference reverse proxy.

- `fixed_upstream_conf`: a stand-in model server that answers every Open Inference
  Protocol v2 `POST /v2/models/{name}/infer` with a fixed JSON response (`return 200`),
  so the upstream's own time is as small and as steady as it gets and whatever a
  proxy adds stands out.
- `reverse_proxy_conf`: nginx as a plain reverse proxy to that upstream, with a
  keepalive pool (`proxy_http_version 1.1`, `Connection ""`): the reference a proxy
  in front of a model can be held to.

Each nginx runs as a non-daemon with one worker, from a generated config in its own
temporary prefix (pid, logs and temp paths inside it): nothing under /etc or /var
is read or written. Run this file to serve the fixed upstream by hand:
`python benchmarks/upstream_nginx.py --port 8080`.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import HOST, Proc

NGINX = "nginx"

# The model name in the URL decides the batch size of the fixed response.
MODEL_1_ROW = "bench"
MODEL_32_ROWS = "bench32"


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def v2_response(rows: int) -> dict[str, Any]:
    """What MLServer's sklearn runtime answers for `rows` rows: one INT64 class per row."""
    return {
        "model_name": MODEL_1_ROW if rows == 1 else MODEL_32_ROWS,
        "model_version": "v1",
        "parameters": {"content_type": "np"},
        "outputs": [
            {
                "name": "predict",
                "shape": [rows, 1],
                "datatype": "INT64",
                "parameters": {"content_type": "np"},
                "data": [i % 3 for i in range(rows)],
            }
        ],
    }


def _nginx_string(text: str) -> str:
    """`text` as a single-quoted nginx string (no variables: `$` is not expected in JSON here)."""
    if "$" in text:
        raise ValueError("fixed responses must not contain '$' (nginx variables)")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _common(prefix: Path) -> str:
    # Running as root, nginx would switch its worker to `nobody`, which cannot enter the
    # private temporary prefix; keep the worker as the user who runs the benchmark.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
"""


def _http_common(prefix: Path) -> str:
    return f"""    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    # Long-lived client connections: no reconnect every 1,000 requests in the middle of a run.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
"""


def fixed_upstream_conf(prefix: Path, port: int) -> str:
    locations = "".join(
        f"""        location = {infer_path(model)} {{
            default_type application/json;
            return 200 {_nginx_string(json.dumps(v2_response(rows), separators=(",", ":")))};
        }}
"""
        for model, rows in ((MODEL_1_ROW, 1), (MODEL_32_ROWS, 32))
    )
    return f"""{_common(prefix)}http {{
{_http_common(prefix)}    server {{
        listen {HOST}:{port} backlog=4096;
{locations}        location / {{ return 404; }}
    }}
}}
"""


def reverse_proxy_conf(prefix: Path, port: int, upstream_port: int) -> str:
    return f"""{_common(prefix)}http {{
{_http_common(prefix)}    upstream model {{
        server {HOST}:{upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port} backlog=4096;
        location / {{
            proxy_pass http://model;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(name: str, conf: str, prefix: Path, port: int) -> Proc:
    """Write `conf` into `prefix` and run nginx on it in the foreground; waits for `port`."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    argv = [
        shutil.which(NGINX) or "/usr/sbin/nginx",
        "-c", str(conf_path), "-p", f"{prefix}/", "-e", str(prefix / "error.log"),
        "-g", "daemon off;",
    ]  # fmt: skip
    proc = Proc(name, argv, prefix / "stdout.log")
    try:
        proc.wait_port(port)
    except BaseException:
        proc.stop()
        raise
    return proc


def nginx_command(prefix: Path) -> str:
    """The command line `start_nginx` uses, for the results file."""
    return f"nginx -c {prefix}/nginx.conf -p {prefix}/ -e {prefix}/error.log -g 'daemon off;'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlwarden-bench-nginx-") as tmp:
        prefix = Path(tmp)
        proc = start_nginx("upstream", fixed_upstream_conf(prefix, args.port), prefix, args.port)
        print(f"fixed v2 upstream on http://{HOST}:{args.port}{infer_path(MODEL_1_ROW)} "
              f"(and {infer_path(MODEL_32_ROWS)}); Ctrl-C stops it")  # fmt: skip
        try:
            while proc.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
