"""The `mlwarden` command: one entry point, one subcommand per component.

    mlwarden sidecar   the capture proxy beside a model server
    mlwarden detector  drift, quality, SLO and performance checks for one model
    mlwarden operator  the Kubernetes operator (kopf)
    mlwarden check     offline drift and data-quality report on two data files
    mlwarden demo      the whole loop on this machine, no cluster

Every flag can also be given as an environment variable: `--sample-rate` is
`MLWARDEN_SAMPLE_RATE`; a flag on the command line wins over the variable.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mlwarden import __version__
from mlwarden.ingest_auth import ENV_TOKEN, load_ingest_token
from mlwarden.sidecar.config import SidecarConfig, parse_hostport, parse_http_url
from mlwarden.spec import SpecError, load_observed_model

ENV_PREFIX = "MLWARDEN_"


class UsageError(Exception):
    pass


def _env(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _add(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    help: str,
    default: Any = None,
    type: Callable[[str], Any] = str,
    required: bool = False,
    **kwargs: Any,
) -> None:
    """Add a flag whose default comes from its MLWARDEN_* variable."""
    env = _env(flag)
    env_value = os.environ.get(env)
    value = default
    if env_value not in (None, ""):
        try:
            value = type(env_value)
        except ValueError:
            raise UsageError(f"{env}={env_value!r}: not a valid {type.__name__}") from None
    shown = kwargs.pop("shown_default", default)
    suffix = f" [env {env}" + (f"; default {shown}]" if shown is not None else "]")
    parser.add_argument(
        flag,
        default=value,
        type=type,
        required=required and value is None,
        help=help + suffix,
        **kwargs,
    )


def _sidecar_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sidecar",
        help="run the capture proxy beside a model server",
        description=(
            "Reverse proxy beside the model server. Every path on --listen is forwarded to "
            "--upstream unchanged; request/response pairs are parsed off the hot path and "
            "shipped in batches to --collector (the detector). /metrics, /healthz and /readyz "
            "are served on --admin-listen."
        ),
        epilog=(
            "The HTTP forwarding path runs compiled (mypyc) when this installation has the "
            "build made from its own source (`make native`, the slim image); "
            'mlwarden_sidecar_info{forwarder="native"|"python"} and the start-up line say '
            "which. MLWARDEN_SIDECAR_NATIVE=0 runs it interpreted."
        ),
    )
    _add(p, "--listen", help="HOST:PORT the model's clients connect to", required=True)
    _add(p, "--upstream", help="URL of the model server, e.g. http://127.0.0.1:8080", required=True)
    _add(p, "--collector", help="detector base URL records are shipped to (POST /v1/records)")
    _add(
        p,
        "--admin-listen",
        help="HOST:PORT for /metrics, /healthz, /readyz",
        default="0.0.0.0:9090",
    )
    # These three default to the ObservedModel's spec.protocol and spec.capture when
    # --observed-model is given; a flag or variable overrides the manifest.
    _add(
        p,
        "--protocol",
        help="request format: auto|v2|v2-grpc|v1|openai|json (v2-grpc: --listen serves gRPC, "
        "forwarded to the model's gRPC port at --upstream)",
        shown_default="auto",
    )
    _add(
        p,
        "--grpc-listen",
        help="HOST:PORT of a gRPC listener beside the HTTP one, for Open Inference Protocol v2 "
        "clients over gRPC (needs --grpc-upstream)",
    )
    _add(
        p,
        "--grpc-upstream",
        help="HOST:PORT of the model server's gRPC port, e.g. 127.0.0.1:8081",
    )
    _add(
        p,
        "--sample-rate",
        help="fraction of exchanges captured, 0..1",
        type=float,
        shown_default=1.0,
    )
    _add(p, "--observed-model", help="ObservedModel manifest (feature names, json paths)")
    _add(
        p,
        "--max-body-bytes",
        help="bodies larger than this are forwarded but not captured",
        type=int,
        shown_default=1 << 20,
    )
    _add(
        p,
        "--queue-size",
        help="exchanges waiting to be parsed before new ones are dropped",
        default=10_000,
        type=int,
    )
    _add(p, "--batch-size", help="records per batch shipped", default=500, type=int)
    _add(
        p,
        "--batch-interval",
        help="seconds a record may wait for its batch",
        default=1.0,
        type=float,
    )
    _add(
        p,
        "--buffer-records",
        help="records held while the collector is unreachable",
        default=50_000,
        type=int,
    )
    _add(
        p,
        "--ship-timeout",
        help="seconds one batch post to the collector may take",
        default=5.0,
        type=float,
    )
    _add(p, "--ship-attempts", help="posts of one batch before it is dropped", default=5, type=int)
    _add(
        p,
        "--ingest-token-file",
        help="file holding the detector's ingest token, sent as 'Authorization: Bearer' (or "
        "the token itself in MLWARDEN_INGEST_TOKEN); it also keys spec.capture.redact hashes",
    )
    _add(
        p,
        "--upstream-timeout",
        help="seconds to wait for the model to send data",
        default=60.0,
        type=float,
    )
    _add(
        p,
        "--client-header-timeout",
        help="seconds a client connection may take to send a complete request head, counted "
        "from when it opened or from its previous response (so also the keep-alive idle "
        "timeout); then it is closed (slowloris)",
        default=60.0,
        type=float,
    )
    _add(
        p,
        "--client-body-timeout",
        help="seconds to wait for the next piece of a request body; then 408 and the "
        "connection is closed",
        default=60.0,
        type=float,
    )
    _add(
        p,
        "--max-connections",
        help="open client connections on --listen; more are answered 503 and closed",
        default=4096,
        type=int,
    )
    _add(
        p,
        "--model-revision",
        help="the model revision every shipped record is stamped with (the operator sets "
        "MLWARDEN_MODEL_REVISION from the pod's pod-template-hash label); the detector keeps "
        "windows per revision and judges a canary against its baseline",
    )
    _add(
        p,
        "--drain-seconds",
        help="on SIGTERM, seconds to keep serving with /readyz failing and 'Connection: close' "
        "on every response (so load balancers and keep-alive clients move away) before no "
        "new connection is accepted",
        default=5.0,
        type=float,
    )
    _add(
        p,
        "--shutdown-timeout",
        help="seconds after the drain for in-flight requests to finish and captured records "
        "to be shipped; then the sidecar exits",
        default=10.0,
        type=float,
    )
    _add(p, "--log-level", help="debug|info|warning|error", default="info")


def _detector_parser(sub: Any) -> None:
    p = sub.add_parser(
        "detector",
        help="run the drift, quality, SLO and performance checks for one ObservedModel",
        description=(
            "Ingests captured records (POST /v1/records, or KServe CloudEvents), keeps the "
            "reference and the current window, evaluates the checks the ObservedModel enables "
            "every spec.alerting.evaluationInterval, and serves GET /v1/status and /metrics. "
            "In a cluster (or with --report-to) it writes alert changes to the ObservedModel's "
            "status."
        ),
    )
    _add(p, "--observed-model", help="ObservedModel manifest (YAML)", required=True)
    _add(p, "--listen", help="HOST:PORT for the API and /metrics", default="0.0.0.0:8080")
    _add(
        p,
        "--report-to",
        help="Kubernetes API URL to write status.alerts to (default: "
        "in-cluster when running in a pod, else nowhere)",
    )
    _add(p, "--report-token", help="bearer token for --report-to")
    _add(
        p,
        "--report-token-file",
        help="file holding the bearer token for --report-to (instead of --report-token), "
        "read again when it changes, as a projected service-account token the kubelet rotates",
    )
    _add(
        p,
        "--reference-dir",
        help="where a configMap reference is mounted",
        default="/etc/mlwarden/reference",
    )
    _add(
        p,
        "--reference-store",
        help="directory where the warm-up reference is stored and reloaded after a restart "
        "(default: ConfigMap NAME-reference when reporting to the API, else not stored)",
    )
    _add(
        p,
        "--ingest-token-file",
        help="file holding the token every POST must present as 'Authorization: Bearer' "
        "(or the token itself in MLWARDEN_INGEST_TOKEN); without one, ingest is open",
    )
    _add(p, "--log-level", help="debug|info|warning|error", default="info")


def _operator_parser(sub: Any) -> None:
    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator",
        description=(
            "Reconciles ObservedModels: the detector objects (NAME-detector), the sidecar in the "
            "target Deployment, status and Events. Honours KUBECONFIG and in-cluster config. "
            "Images, ports and resources come from MLWARDEN_* variables (see the Helm chart)."
        ),
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable)",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (the default when no --namespace is given)",
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        help="no peering, even if the peering CRDs exist (one replica only)",
    )
    p.add_argument(
        "--priority",
        type=int,
        default=None,
        metavar="N",
        help="peering priority: with several replicas the highest works and the others stand "
        "by (kopf pauses peers of equal priority, so the default is random per process) "
        "[env MLWARDEN_PRIORITY]",
    )
    p.add_argument(
        "--liveness",
        metavar="URL",
        default=os.environ.get("MLWARDEN_LIVENESS"),
        help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz "
        "[env MLWARDEN_LIVENESS]",
    )
    p.add_argument(
        "--alertmanager-url",
        metavar="URL",
        default=None,
        help="push incidents to this Alertmanager (v2 API; several URLs, one per replica, "
        "separated by commas) [env MLWARDEN_ALERTMANAGER_URL; the flag wins]",
    )
    p.add_argument("--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlwarden",
        description="Bolt-on observability for ML models on Kubernetes: detect, diagnose, react.",
    )
    parser.add_argument("--version", action="version", version=f"mlwarden {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _sidecar_parser(sub)
    _detector_parser(sub)
    _operator_parser(sub)
    check = sub.add_parser(
        "check",
        help="offline drift and data-quality report on two data files",
        description=(
            "Compares --current with --reference using the detector's checks and defaults "
            "(CSV, JSON Lines or Parquet, by extension; files or http(s) URLs). Column types "
            "come from --observed-model, or are inferred from the reference. Both files must "
            "have the same columns (with --observed-model: the declared ones). --format json "
            "is a documented contract (docs/check.md). Exit 0: no finding matching --fail-on; "
            "1: findings matching --fail-on; 2: bad input."
        ),
    )
    check.add_argument("--reference", required=True, help="the reference data file")
    check.add_argument("--current", required=True, help="the data to check")
    check.add_argument("--observed-model", help="ObservedModel manifest (columns, thresholds)")
    check.add_argument("--format", choices=("text", "json", "html"), default="text")
    check.add_argument("--output", "-o", help="write the report here instead of stdout")
    check.add_argument(
        "--fail-on",
        choices=("none", "drift", "quality", "any"),
        default="none",
        help="exit 1 when findings of this kind are present (default: none)",
    )
    check.add_argument(
        "--no-multivariate",
        dest="multivariate",
        action="store_false",
        help="skip the multivariate drift check (run by default with two or more features)",
    )
    check.add_argument(
        "--segment",
        action="append",
        default=[],
        metavar="COLUMN",
        help="also check each segment of COLUMN (its most frequent values, the rest as other); "
        "repeatable or a comma list; default: the ObservedModel's spec.segments",
    )
    demo = sub.add_parser(
        "demo",
        help="the whole loop on this machine: detect, diagnose and react to two incidents",
        description=(
            "Runs MLServer with two versions of an iris model, the mlwarden sidecar, detector "
            "and operator, and a Kubernetes API emulator (kubectl works against it: the "
            "KUBECONFIG line is printed), all on loopback. The story: a feature job starts "
            "sending a feature in another unit (detected, blamed on the job, alerted on, not "
            "rolled back), then a bad model version rolls out (detected as prediction drift, "
            "blamed on the rollout, rolled back). Exit status 0 when both incidents were "
            "detected and no request failed."
        ),
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave everything running until Ctrl-C (try kubectl and curl against it)",
    )
    demo.add_argument(
        "--fast", action="store_true", help="shorter pauses and more traffic (used by the tests)"
    )
    demo.add_argument(
        "--report",
        default="mlwarden-demo-report.html",
        help="where to write the HTML report (default: %(default)s; '' for none)",
    )
    demo.add_argument("--summary-json", help="also write the outcome as JSON here")
    return parser


def _sidecar_config(args: argparse.Namespace) -> Any:

    observed = None
    manifest_missing = None
    if args.observed_model and not Path(args.observed_model).exists():
        # Injected pods mount the manifest from an optional ConfigMap: once the ObservedModel
        # is deleted (or mlwarden uninstalled) before its injection was undone, the file is
        # gone. The model must keep serving: proxy, and capture nothing (see Sidecar.start).
        manifest_missing = str(args.observed_model)
    elif args.observed_model:
        observed = load_observed_model(args.observed_model)
    capture = observed.spec.capture if observed is not None else None

    def pick(given: Any, from_manifest: Any, default: Any) -> Any:
        if given is not None:
            return given
        return from_manifest if observed is not None else default

    protocol = pick(args.protocol, observed.spec.protocol if observed else None, "auto")
    sample_rate = pick(args.sample_rate, capture.sample_rate if capture else None, 1.0)
    max_body = pick(args.max_body_bytes, capture.max_body_bytes if capture else None, 1 << 20)
    return SidecarConfig(
        listen=parse_hostport(args.listen, what="--listen"),
        upstream=parse_http_url(args.upstream, what="--upstream"),
        admin_listen=parse_hostport(args.admin_listen, what="--admin-listen"),
        collector=parse_http_url(args.collector, what="--collector") if args.collector else None,
        protocol=protocol,
        sample_rate=sample_rate,
        max_body_bytes=max_body,
        queue_size=args.queue_size,
        batch_size=args.batch_size,
        batch_interval_seconds=args.batch_interval,
        buffer_records=args.buffer_records,
        ship_timeout_seconds=args.ship_timeout,
        ship_max_attempts=args.ship_attempts,
        upstream_read_timeout_seconds=args.upstream_timeout,
        client_header_timeout_seconds=args.client_header_timeout,
        client_body_timeout_seconds=args.client_body_timeout,
        max_connections=args.max_connections,
        drain_seconds=args.drain_seconds,
        shutdown_timeout_seconds=args.shutdown_timeout,
        model_revision=args.model_revision or None,
        grpc_listen=(
            parse_hostport(args.grpc_listen, what="--grpc-listen") if args.grpc_listen else None
        ),
        grpc_upstream=args.grpc_upstream or None,
        observed_model=observed,
        manifest_missing=manifest_missing,
        ingest_token=load_ingest_token(
            file=args.ingest_token_file, value=os.environ.get(ENV_TOKEN)
        ),
    )


def _run_detector(args: argparse.Namespace) -> int:
    # reason: numpy, scipy and aiohttp load for `mlwarden detector` alone
    from mlwarden.detector.datafile import DataFileError
    from mlwarden.detector.reporter import StatusWriter, write_interval
    from mlwarden.detector.service import serve
    from mlwarden.detector.store import ConfigMapStore, FileStore, ReferenceStore
    from mlwarden.kube import Credentials, Kube, StaticToken, TokenFile

    model = load_observed_model(args.observed_model)
    listen = parse_hostport(args.listen, what="--listen")
    token = load_ingest_token(file=args.ingest_token_file, value=os.environ.get(ENV_TOKEN))
    every = write_interval(model.spec.alerting.evaluation_interval_seconds)
    if args.report_token and args.report_token_file:
        raise UsageError("--report-token and --report-token-file: give one, not both")
    if args.report_to:
        server = parse_http_url(args.report_to, what="--report-to")
        credentials: Credentials = (
            TokenFile(server, args.report_token_file)
            if args.report_token_file
            else StaticToken(server, args.report_token)
        )
        writer: StatusWriter | None = StatusWriter(
            Kube(credentials, timeout=10.0),
            namespace=model.namespace,
            name=model.name,
            min_interval=every,
        )
    else:
        writer = StatusWriter.in_cluster(
            namespace=model.namespace, name=model.name, min_interval=every
        )
    store: ReferenceStore | None = None
    if args.reference_store:
        store = FileStore(args.reference_store, namespace=model.namespace, name=model.name)
    elif writer is not None:
        # The same API client and credentials as the status writes: ConfigMap NAME-reference.
        store = ConfigMapStore(writer.kube, namespace=model.namespace, name=model.name)
    try:
        _run_loop(
            serve(
                model,
                listen,
                writer=writer,
                reference_dir=args.reference_dir,
                store=store,
                ingest_token=token,
            )
        )
    except DataFileError as exc:
        print(f"mlwarden detector: reference: {exc}", file=sys.stderr)
        return 2
    return 0


def _run_check(args: argparse.Namespace) -> int:
    # One BLAS thread (unless the user chose): check's matrices are small (the multivariate
    # check's SVD of 2,500 x ~60), where OpenBLAS's threads cost ten times the work, and
    # check runs its columns on threads of its own. It acts only before numpy loads (a
    # process that already has numpy, a test calling main, keeps its setting).
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # reason: pyarrow; the checks' code loads in run_check, while the files are read
    from mlwarden.check import CheckError, run_check

    manifest = load_observed_model(args.observed_model) if args.observed_model else None
    with _check_progress() as progress:
        try:
            segments = [c.strip() for arg in args.segment for c in arg.split(",") if c.strip()]
            report = run_check(
                args.reference,
                args.current,
                manifest=manifest,
                progress=progress,
                multivariate=args.multivariate,
                segments=segments,
            )
        except CheckError as exc:
            progress.stop()
            print(f"mlwarden check: {exc}", file=sys.stderr)
            return 2
    if args.format != "text":  # text carries them itself; JSON and HTML too, stderr for people
        for warning in report.warnings:
            print(f"mlwarden check: warning: {warning}", file=sys.stderr)
    from mlwarden.check import render  # reason: after run_check has started reading

    text = render(report, args.format)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            print(f"mlwarden check: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 2
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 1 if report.failing(args.fail_on) else 0


class _CheckProgress:
    """`mlwarden check` progress on stderr: rich bars when stderr is a terminal, else quiet."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        if sys.stderr.isatty():
            try:  # reason: rich loads only when a person watches `mlwarden check` on a terminal
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )
            except ImportError:  # pragma: no cover - rich is a dependency
                return
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
            )  # fmt: skip

    def __enter__(self) -> _CheckProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __call__(self, step: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        task = self._tasks.get(step)
        if task is None:
            task = self._tasks[step] = self._bar.add_task(step, total=total)
        self._bar.update(task, completed=done, total=total)


def _check_progress() -> _CheckProgress:
    return _CheckProgress()


def _run_operator(args: argparse.Namespace) -> int:
    # reason: kopf and kubernetes load for `mlwarden operator` alone
    import kopf

    from mlwarden.operator import handlers  # registers the handlers
    from mlwarden.operator.settings import OperatorSettings

    if args.alertmanager_url is not None:  # the flag wins; the handlers read the settings
        os.environ["MLWARDEN_ALERTMANAGER_URL"] = args.alertmanager_url
    settings = OperatorSettings.from_env()  # fail early, naming the variable, on a bad setting
    handlers.NAMESPACED = bool(args.namespace)
    if settings.injection == "webhook":
        from mlwarden.operator import webhook  # reason: only in webhook mode; registers it

        webhook.server_from_env(os.environ)  # fail now, naming the variable, without a cert
    kopf.configure(verbose=args.verbose)
    priority = args.priority
    if priority is None:
        env_priority = os.environ.get("MLWARDEN_PRIORITY")
        priority = int(env_priority) if env_priority else random.randint(1, 1_000_000)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True if args.standalone else None,
        priority=priority,
        liveness_endpoint=args.liveness,
    )
    return 0


def _run_loop(coro: Any) -> None:
    try:  # reason: uvloop is absent on some platforms
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is absent on some platforms
        import asyncio  # reason: `mlwarden check` and `crd` start without the event loop's imports

        runner = asyncio.run
    runner(coro)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except UsageError as exc:
        print(f"mlwarden: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", "info").upper()
    if args.command != "operator":  # kopf configures its own logging
        logging.basicConfig(
            level=getattr(logging, level, logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    try:
        if args.command == "sidecar":
            from mlwarden.sidecar.proxy import serve  # reason: aiohttp, for the sidecar alone

            _run_loop(serve(_sidecar_config(args)))
            return 0
        if args.command == "detector":
            return _run_detector(args)
        if args.command == "operator":
            return _run_operator(args)
        if args.command == "check":
            return _run_check(args)
        if args.command == "demo":
            try:  # reason: the demo's extra dependencies load for `mlwarden demo` alone
                from mlwarden.demo import run_demo
            except ImportError as exc:
                print(f"the demo needs {exc.name}: pip install 'mlwarden[demo]'", file=sys.stderr)
                return 2

            return run_demo(
                keep_running=args.keep_running,
                fast=args.fast,
                report=args.report or None,
                summary_json=args.summary_json,
            )
        parser.error(f"unknown command {args.command!r}")
        return 2  # pragma: no cover - parser.error exits
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # The slim sidecar image (Dockerfile target `sidecar`) holds `mlwarden sidecar` only.
        print(
            f"mlwarden {args.command}: needs the Python package {exc.name!r}, which is not "
            "installed here (the slim sidecar image runs `mlwarden sidecar` only; use the "
            "full mlwarden image)",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:
        print(f"mlwarden {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
