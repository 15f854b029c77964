"""How the real operator copes with 1, 100 and 1,000 ObservedModels against kmock's emulator.

For each size N, in a fresh emulator (the same `Cluster` the operator tests use,
tests/operator/cluster.py: kmock's `KubernetesEmulator` plus uids, resourceVersions,
generations and a Deployment controller whose rollouts complete at once):

1. seed N target Deployments and their Services (`model-0` ... `model-{N-1}`);
2. start the real `mlwarden operator --namespace test --standalone` (kopf) with the
   production settings (retry delay MLWARDEN_RETRY_SECONDS=5 s, respond interval 30 s),
   and wait until it watches ObservedModels;
3. create the N ObservedModels through the API (POST, as `kubectl apply` would), as fast
   as the emulator takes them, and time until every one is reconciled: phase `WarmingUp`
   (the sidecar injected, the Service repointed, the detector Deployment available) and all
   six owned objects (`NAME-detector` ConfigMap, ServiceAccount, Role, RoleBinding,
   Deployment, Service) created;
4. keep the operator running idle for a few seconds, to see what it does when there is
   nothing to do.

It reports the time until all were reconciled (and the per-model time from its creation),
the operator's peak RSS (VmHWM from /proc), the CPU seconds it used (utime + stime from
/proc/PID/stat) while reconciling and while idle, and every API request the emulator
served to the operator, by verb and by resource (the benchmark's own POSTs are left out).
The 1,000 case is capped (`--operator-timeout`, default 300 s); if it does not finish, the
table says how many were reconciled and at what rate.

The emulator runs in this process, on the same two cores as the operator. kmock looks an
object up by scanning every object it stores; at 1,000 models (about 14,000 objects with
the Events) that scan, not the operator, would dominate, so the emulator here keeps an
index by (namespace, name) and scans only the few objects sharing it (`IndexedCluster`).
The index changes no answer (it picks the same objects kmock's check would).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from procs import Proc, free_port, loadavg, log_stderr

HERE = Path(__file__).resolve().parent
# The operator tests' cluster, and the port allocator it shares with the integration tests
# (pytest puts both on the path through pyproject.toml's pythonpath).
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))
sys.path.insert(0, str(HERE.parent / "tests" / "operator"))

import kmock  # noqa: E402
from cluster import (  # noqa: E402
    NS,
    OM,
    RESOURCES,
    Cluster,
    declare,
    kubeconfig,
    model_deployment,
    model_service,
    observed_model,
)

NAME = "operator_scale"
SIZES = (1, 100, 1000)
OWNED = ("ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service")
MARK = "X-Mlwarden-Bench"  # on the benchmark's own requests, left out of the counts
IDLE_S = 10.0
# At the largest size, idle for longer than the respond timer's interval (30 s): every
# ObservedModel's timer fires at least once in it.
IDLE_LONG_S = 35.0
TIMEOUT_S = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
VERBS = ("GET", "LIST", "WATCH", "POST", "PATCH", "PUT", "DELETE")


class IndexedCluster(Cluster):
    """`Cluster` without kmock's two costs that grow with what it has seen.

    - Matching: kmock decides which reaction serves a request by testing whether the
      request is among those each reaction's filter selects from *every request served so
      far* (`request in view` iterates the root's history), so each request costs time in
      proportion to all the requests before it. Here the root iterates only the requests
      being handled at that moment, which always include the one being matched; the
      emulator's reactions are plain filters on the request itself, so they match the same.
      Every request is still kept in `_requests` (and counted).
    - Lookup: kmock's `__get_objs` checks every stored object against the request; for a
      request naming its object this looks at only the objects of that namespace and name
      (one per kind at most) and applies kmock's own check to them, so it returns the same
      objects. Lists and watches (no name) still scan everything, as kmock does.
    """

    _index: dict[tuple[str | None, str], list[Any]]
    _indexed: int
    _in_flight: dict[int, Any]

    def __iter__(self) -> Any:
        return iter(list(getattr(self, "_in_flight", {}).values()))

    async def _handle(self, request: Any) -> Any:
        if not hasattr(self, "_in_flight"):
            self._in_flight = {}
        self._in_flight[id(request)] = request
        try:
            return await super()._handle(request)
        finally:
            self._in_flight.pop(id(request), None)

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        if request.name is None:
            return self._scan(request, strict)
        store = self._objects._objects
        if not hasattr(self, "_index") or len(store) < self._indexed:
            self._index, self._indexed = {}, 0
        if len(store) > self._indexed:
            for key in itertools.islice(store.keys(), self._indexed, None):
                self._index.setdefault((key[1], key[2]), []).append(key)
            self._indexed = len(store)
        namespaces = [request.namespace] if strict or request.namespace is not None else None
        keys: list[Any] = []
        if namespaces is None:
            keys = [k for (ns, name), ks in self._index.items() if name == request.name for k in ks]
        else:
            keys = self._index.get((request.namespace, request.name), [])
        check = self._KubernetesEmulator__check
        return [store[k] for k in keys if k in store and check(request, *k, strict=strict)]

    def _scan(self, request: Any, strict: bool) -> list[Any]:
        check = self._KubernetesEmulator__check
        return [obj for key, obj in self._objects.items() if check(request, *key, strict=strict)]


# --------------------------------------------------------------------------- /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def owned_by_model(api: Cluster) -> dict[str, int]:
    """Objects whose ownerReferences name an ObservedModel, counted by kind (one scan)."""
    out: collections.Counter[str] = collections.Counter()
    for key in api.objects:
        obj = api.objects[key]
        if obj.deleted:
            continue
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        if any(r.get("kind") == "ObservedModel" for r in refs):
            out[str(obj.get("kind") or key[0].plural)] += 1
    return dict(out)


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# --------------------------------------------------------------------------- one size


def _verb(req: Any) -> str:
    method = str(req.method.value if hasattr(req.method, "value") else req.method).upper()
    action = str(getattr(req.action, "value", req.action) or "").lower()
    if method == "GET" and action == "watch":
        return "WATCH"
    if method == "GET" and action == "list":
        return "LIST"
    return method


def _resource(req: Any) -> str:
    res = req.resource
    if res is None:
        return "(discovery)"
    plural = str(getattr(res, "plural", res))
    return plural + ("/" + req.subresource if req.subresource else "")


def count_requests(api: Cluster, start: int, stop: int | None = None) -> dict[str, Any]:
    """The operator's requests among api._requests[start:stop], by verb and by resource."""
    by_verb: collections.Counter[str] = collections.Counter()
    by_resource: collections.Counter[str] = collections.Counter()
    for req in api._requests[start:stop]:
        if MARK.lower() in {k.lower() for k in req.headers}:
            continue
        verb = _verb(req)
        by_verb[verb] += 1
        by_resource[f"{verb} {_resource(req)}"] += 1
    return {"total": sum(by_verb.values()), "by_verb": dict(by_verb),
            "by_resource": dict(by_resource.most_common())}  # fmt: skip


def _watching(api: Cluster) -> bool:
    return any(
        _verb(r) == "WATCH" and _resource(r) == "observedmodels" for r in list(api._requests)
    )


def _reconciled(api: Cluster, name: str) -> bool:
    try:
        om = api.objects[OM, NS, name]
    except KeyError:
        return False
    if ((om.get("status") or {}).get("phase")) != "WarmingUp":
        return False
    for kind in OWNED:
        try:
            if api.objects[RESOURCES[kind], NS, f"{name}-detector"].deleted:
                return False
        except KeyError:
            return False
    return True


async def _stop(proc: Proc, grace: float = 20.0) -> None:
    """SIGTERM and wait without blocking the loop (the emulator must keep answering)."""
    if proc.alive():
        proc.popen.terminate()
        deadline = time.monotonic() + grace
        while proc.alive() and time.monotonic() < deadline:  # noqa: ASYNC110 - a process
            await asyncio.sleep(0.1)
    proc.stop(grace=1.0)


async def measure(
    n: int,
    tmp: Path,
    *,
    timeout: float,  # noqa: ASYNC109 - a cap on the whole measurement, reported as such
    idle: float,
    log: Callable[[str], None],
    alerting: tuple[float, float] | None = None,
    operator_src: str | None = None,
) -> dict[str, Any]:
    """One size. `alerting` = (respond interval, window) adds the alerting phase (below)."""
    names = [f"model-{i}" for i in range(n)]
    load_start = loadavg()
    async with IndexedCluster() as api, kmock.Server(api) as server:
        declare(api)
        url = str(server.url).rstrip("/")
        for name in names:
            for obj in (model_deployment(name), model_service(name)):
                api.objects[RESOURCES[obj["kind"]], NS, name] = obj
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLWARDEN_")}
        env.update(KUBECONFIG=str(kubeconfig(tmp, url)), MLWARDEN_IMAGE="mlwarden/mlwarden:bench",
                   MLWARDEN_METRICS_PORT=str(free_port()))  # fmt: skip
        if alerting is not None:
            env["MLWARDEN_RESPOND_INTERVAL"] = f"{alerting[0]:g}"
        if operator_src:  # another version of the operator (the "before" of a change)
            env["PYTHONPATH"] = operator_src
        argv = [sys.executable, "-m", "mlwarden.cli", "operator", "--namespace", NS,
                "--standalone"]  # fmt: skip
        op = Proc("operator", argv, tmp / f"operator-{n}.log", env=env)
        try:
            t0 = time.monotonic()
            while not _watching(api):
                if not op.alive():
                    raise RuntimeError(f"the operator exited:\n{op.tail()}")
                if time.monotonic() - t0 > 60:
                    raise TimeoutError(f"the operator did not watch ObservedModels:\n{op.tail()}")
                await asyncio.sleep(0.05)
            startup_s = time.monotonic() - t0
            await asyncio.sleep(1.0)
            pid = op.popen.pid
            cpu0, self0 = proc_cpu_seconds(pid), self_cpu_seconds()
            first = len(api._requests)
            t_start = time.monotonic()
            created: dict[str, float] = {}
            done: dict[str, float] = {}
            async with aiohttp.ClientSession(headers={MARK: "1"}) as http:
                collection = f"{url}/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels"

                async def create(name: str) -> None:
                    body = observed_model(name, target=name)
                    for key in ("uid", "resourceVersion", "generation"):
                        body["metadata"].pop(key)
                    async with http.post(collection, json=body) as resp:
                        if resp.status >= 300:
                            raise RuntimeError(f"POST {name}: {resp.status} {await resp.text()}")
                    created[name] = time.monotonic()

                for chunk in range(0, n, 50):
                    await asyncio.gather(*(create(nm) for nm in names[chunk : chunk + 50]))
            created_s = time.monotonic() - t_start
            pending = list(names)
            deadline = t_start + timeout
            last_log = t_start
            while pending and time.monotonic() < deadline:
                if not op.alive():
                    raise RuntimeError(f"the operator exited:\n{op.tail()}")
                now = time.monotonic()
                still = []
                for name in pending:
                    if _reconciled(api, name):
                        done[name] = now
                    else:
                        still.append(name)
                pending = still
                if now - last_log > 15:
                    log(f"{NAME}: N={n}: {len(done)}/{n} reconciled after {now - t_start:.0f} s")
                    last_log = now
                await asyncio.sleep(0.25)
            t_end = time.monotonic()
            elapsed = (max(done.values()) if not pending else t_end) - t_start
            cpu1, self1 = proc_cpu_seconds(pid), self_cpu_seconds()
            mid = len(api._requests)
            rss_kib = proc_status_kib(pid, "VmRSS")
            await asyncio.sleep(idle)
            cpu2 = proc_cpu_seconds(pid)
            idle_requests = count_requests(api, mid)
            hwm_kib = proc_status_kib(pid, "VmHWM")
            objects = sum(1 for k in api.objects if not api.objects[k].deleted)
            events = sum(1 for k in api.objects if str(k[0].plural) == "events")
            owned = owned_by_model(api)
            reconcile_requests = count_requests(api, first, mid)
            alert_phase = None
            if alerting is not None:
                alert_phase = await measure_alerting(api, url, names, interval=alerting[0],
                                                     window=alerting[1], op=op)  # fmt: skip
        finally:
            await _stop(op)
    latencies = sorted(done[nm] - created[nm] for nm in done)
    reconciled = len(done)
    return {
        "n": n,
        "reconciled": reconciled,
        "complete": not pending,
        "timeout_s": timeout,
        "startup_s": round(startup_s, 2),
        "create_s": round(created_s, 2),
        "elapsed_s": round(elapsed, 2),
        "rate_per_s": reconciled / elapsed if elapsed > 0 else math.nan,
        "per_model_p50_s": statistics.median(latencies) if latencies else math.nan,
        "per_model_max_s": latencies[-1] if latencies else math.nan,
        "cpu_s": round(cpu1 - cpu0, 2),
        "cpu_idle_s": round(cpu2 - cpu1, 2),
        "idle_s": idle,
        "emulator_cpu_s": round(self1 - self0, 2),
        "rss_mib": rss_kib / 1024,
        "peak_rss_mib": hwm_kib / 1024,
        "requests": reconcile_requests,
        "requests_per_model": reconcile_requests["total"] / max(reconciled, 1),
        "idle_requests": idle_requests,
        "objects_in_emulator": objects,
        "events_in_emulator": events,
        "owned_per_model": {kind: n / max(len(names), 1) for kind, n in owned.items()},
        "loadavg": {"start": load_start, "end": loadavg()},
        "command": " ".join(argv[2:]).replace("-m mlwarden.cli", "mlwarden"),
        "alerting": alert_phase,
    }


# --------------------------------------------------------------------------- with an alert

PRODUCTION_INTERVAL_S = 30.0  # MLWARDEN_RESPOND_INTERVAL's default
ALERTING_N = 10
ALERTING_INTERVAL_S = 1.0
ALERTING_WINDOW_S = 20.0
REFERENCE = {"id": "warmup@bench", "since": "2026-11-26T15:00:00Z"}


async def measure_alerting(
    api: Cluster, url: str, names: list[str], *, interval: float, window: float, op: Proc
) -> dict[str, Any]:
    """Every model with an active alert: the requests of the respond timer's passes.

    Each ObservedModel gets, as its detector would write it, a reference and a FeatureDrift
    alert (the benchmark's own PATCHes, left out of the counts). After the passes the
    alert change starts (and a few timer passes) have run, every request the operator makes
    in `window` seconds is counted. A pass begins by reading its ObservedModel (one GET by
    name, the only one the operator makes), so the GETs of observedmodels count the passes;
    requests per pass = requests / passes, and per model per hour at the production interval
    = requests per pass x 3600 / 30 (one pass per model every 30 s while an alert is active).
    """
    alert = {"type": "FeatureDrift", "feature": "amount", "test": "ks", "statistic": 0.4,
             "threshold": 0.1, "since": "2026-11-26T16:00:00Z",
             "reference": REFERENCE["id"]}  # fmt: skip
    headers = {MARK: "1", "Content-Type": "application/merge-patch+json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for name in names:
            path = f"{url}/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/{name}/status"
            body = {"status": {"detector": {"reference": REFERENCE}, "alerts": [alert]}}
            async with http.patch(path, data=json.dumps(body)) as resp:
                if resp.status >= 300:
                    raise RuntimeError(f"PATCH {name}: {resp.status} {await resp.text()}")
    await asyncio.sleep(max(5.0, 3 * interval))
    if not op.alive():
        raise RuntimeError(f"the operator exited:\n{op.tail()}")
    start = len(api._requests)
    t0 = time.monotonic()
    await asyncio.sleep(window)
    seconds = time.monotonic() - t0
    counted = count_requests(api, start)
    passes = counted["by_resource"].get("GET observedmodels", 0)
    per_pass = counted["total"] / max(passes, 1)
    return {
        "models": len(names),
        "interval_s": interval,
        "window_s": round(seconds, 1),
        "passes": passes,
        "requests": counted,
        "per_pass": per_pass,
        "per_pass_by_resource": {k: v / max(passes, 1) for k, v in counted["by_resource"].items()},
        "per_model_hour": per_pass * 3600 / PRODUCTION_INTERVAL_S,
    }


# --------------------------------------------------------------------------- the run


def run(
    *,
    duration: float = 4.0,
    repeats: int = 3,
    warmup: float = 2.0,
    sizes: tuple[int, ...] = SIZES,
    timeout: float = TIMEOUT_S,
    log: Callable[[str], None] = log_stderr,
    before_src: str | None = None,
) -> dict[str, Any]:
    """Every size; 1 and 100 repeated `repeats` times (medians), 1,000 once (it is long).

    Then ALERTING_N models with an active alert (`measure_alerting`), and the same with the
    operator from `before_src` (another source tree's `src`) when given.
    """
    del duration, warmup  # this benchmark runs until done, not for a set time
    started = time.monotonic()
    runs: dict[int, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="mlwarden-bench-op-") as tmp:
        alerting = run_alerting(Path(tmp), log=log, before_src=before_src)
        for n in sizes:
            times = repeats if n <= 100 else 1
            for r in range(times):
                log(f"{NAME}: N={n} [{r + 1}/{times}]: starting")
                idle = IDLE_LONG_S if n == max(sizes) else IDLE_S
                res = asyncio.run(measure(n, Path(tmp), timeout=timeout, idle=idle, log=log))
                runs.setdefault(n, []).append(res)
                log(
                    f"{NAME}: N={n} [{r + 1}/{times}]: {res['reconciled']}/{n} in "
                    f"{res['elapsed_s']:.1f} s, {res['requests_per_model']:.1f} requests/model, "
                    f"CPU {res['cpu_s']:.1f} s, peak RSS {res['peak_rss_mib']:.0f} MiB"
                )
    results: dict[str, Any] = {"name": NAME, "runs": {str(n): v for n, v in runs.items()}}
    results["alerting"] = alerting
    results["summary"] = {str(n): summarize(v) for n, v in runs.items()}
    results["settings"] = {"repeats": repeats, "timeout_s": timeout, "idle_s": IDLE_S,
                           "idle_long_s": IDLE_LONG_S}  # fmt: skip
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["verdicts"] = verdicts(results)
    results["text"] = render_text(results)
    return results


def run_alerting(
    tmp: Path, *, log: Callable[[str], None] = log_stderr, before_src: str | None = None
) -> dict[str, Any]:
    """ALERTING_N models with an active alert: this operator, and the one in `before_src`."""
    out: dict[str, Any] = {}
    for label, src in (("after", None), ("before", before_src)):
        if label == "before" and not src:
            continue
        log(f"{NAME}: {ALERTING_N} models alerting ({label}): starting")
        res = asyncio.run(measure(ALERTING_N, tmp, timeout=TIMEOUT_S, idle=1.0, log=log,
                                  alerting=(ALERTING_INTERVAL_S, ALERTING_WINDOW_S),
                                  operator_src=src))  # fmt: skip
        phase = res["alerting"]
        phase["command"] = res["command"]
        phase["source"] = src or "this tree"
        out[label] = phase
        log(f"{NAME}: alerting ({label}): {phase['passes']} passes, "
            f"{phase['per_pass']:.1f} requests/pass, "
            f"{phase['per_model_hour']:.0f} requests/model/hour at 30 s")  # fmt: skip
    return out


def render_alerting(alerting: dict[str, Any]) -> list[str]:
    """The markdown of the alerting measurement (a sub-section of the operator's)."""
    if not alerting:
        return []
    after = alerting["after"]
    out = [
        "### With an active alert: API requests per model per hour",
        "",
        f"{after['models']} ObservedModels reconciled as above, then each given a detector "
        "reference and a FeatureDrift alert (the benchmark's own status PATCHes, not counted), "
        "so that every model's respond timer runs a diagnosis and reaction pass. The timer "
        f"interval is shortened to {after['interval_s']:g} s (MLWARDEN_RESPOND_INTERVAL) so "
        "that a short run holds many passes; after the passes started by the alert change, "
        f"every request the operator makes in {after['window_s']:g} s is counted. Each pass "
        "reads its ObservedModel by name first (the only GET of an ObservedModel the operator "
        "makes), so those GETs count the passes; requests per model per hour = requests per "
        f"pass x 3600 / {PRODUCTION_INTERVAL_S:g} (one pass per model every 30 s, the "
        "default interval, while an alert is active). The watches are the operator's, not "
        "a model's: one per kind, reopened when the API server ends them (server timeout "
        "300 s: about 12 an hour per kind), whatever the number of models.",
        "",
        f"Command: `.venv/bin/python benchmarks/operator_scale.py --alerting-only` (the "
        "operator as above, with `MLWARDEN_RESPOND_INTERVAL="
        f"{after['interval_s']:g}`); the before row with `--before-src DIR`, DIR holding "
        "`src/` of the version before the watch-backed caches "
        "(`git archive COMMIT src | tar -x -C ...`).",
        "",
        "| operator | passes | requests per pass | of them LIST | per model per hour at 30 s "
        "| by resource, per pass |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label in ("before", "after"):
        if label not in alerting:
            continue
        a = alerting[label]
        lists = a["requests"]["by_verb"].get("LIST", 0) / max(a["passes"], 1)
        top = ", ".join(f"{k} {v:.2f}" for k, v in a["per_pass_by_resource"].items())
        name = "before: LIST of every kind per pass" if label == "before" else (
            "after: watch-backed caches")  # fmt: skip
        out.append(f"| {name} | {a['passes']} | {a['per_pass']:.2f} | {lists:.2f} | "
                   f"{a['per_model_hour']:.0f} | {top} |")  # fmt: skip
    out.append("")
    return out


def _median(values: list[float]) -> float:
    clean = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(clean) if clean else math.nan


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("reconciled", "startup_s", "create_s", "elapsed_s", "rate_per_s", "per_model_p50_s",
            "per_model_max_s", "cpu_s", "cpu_idle_s", "idle_s", "emulator_cpu_s", "rss_mib",
            "peak_rss_mib", "requests_per_model")  # fmt: skip
    out: dict[str, Any] = {k: _median([r[k] for r in runs]) for k in keys}
    out["repeats"] = len(runs)
    out["complete"] = all(r["complete"] for r in runs)
    n = runs[0]["n"]
    out["n"] = n
    verbs: dict[str, float] = {}
    for verb in VERBS:
        per = [r["requests"]["by_verb"].get(verb, 0) / max(r["reconciled"], 1) for r in runs]
        if any(per):
            verbs[verb] = _median(per)
    out["per_model_by_verb"] = verbs
    out["cpu_ms_per_model"] = 1000 * out["cpu_s"] / max(out["reconciled"], 1)
    # the resource breakdown of the median-time run
    mid = sorted(runs, key=lambda r: r["elapsed_s"])[len(runs) // 2]
    out["by_resource"] = mid["requests"]["by_resource"]
    out["idle_requests"] = mid["idle_requests"]
    out["events_in_emulator"] = mid["events_in_emulator"]
    out["owned_per_model"] = mid["owned_per_model"]
    out["loadavg"] = [r["loadavg"] for r in runs]
    out["objects_in_emulator"] = mid["objects_in_emulator"]
    out["command"] = mid["command"]
    return out


def verdicts(res: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for n, s in res["summary"].items():
        figure = (
            f"{s['reconciled']:.0f}/{n} in {s['elapsed_s']:.1f} s "
            f"({s['rate_per_s']:.1f}/s), {s['requests_per_model']:.1f} API requests per "
            f"model, {s['cpu_ms_per_model']:.0f} ms operator CPU per model, "
            f"peak RSS {s['peak_rss_mib']:.0f} MiB"
        )
        status = "INFO" if s["complete"] else "INCOMPLETE"
        out.append({"target": f"{n} ObservedModel(s) reconciled", "status": status,
                    "figure": figure})  # fmt: skip
    return out


# --------------------------------------------------------------------------- reports


def _f(v: float, fmt: str = ".1f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def table(res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["ObservedModels", "reconciled", "time to all (s)", "models/s",
              "per model p50 (s)", "operator CPU (s)", "CPU ms/model", "peak RSS (MiB)",
              "API requests/model", "by verb /model", "idle: CPU s / s", "idle requests",
              "runs"]  # fmt: skip
    rows = []
    for n, s in res["summary"].items():
        verbs = ", ".join(f"{v} {c:.1f}" for v, c in s["per_model_by_verb"].items())
        rows.append([
            f"{int(n):,}", f"{s['reconciled']:.0f}" + ("" if s["complete"] else " (timeout)"),
            _f(s["elapsed_s"]), _f(s["rate_per_s"], ".2f"), _f(s["per_model_p50_s"]),
            _f(s["cpu_s"]), _f(s["cpu_ms_per_model"], ".0f"), _f(s["peak_rss_mib"], ".0f"),
            _f(s["requests_per_model"]), verbs, f"{_f(s['cpu_idle_s'], '.2f')} / {s['idle_s']:g}",
            str(s["idle_requests"]["total"]), str(s["repeats"]),
        ])  # fmt: skip
    return header, rows


def render_text(res: dict[str, Any]) -> str:
    header, rows = table(res)
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    for n, s in res["summary"].items():
        top = ", ".join(f"{k} {v / max(s['reconciled'], 1):.2f}"
                        for k, v in list(s["by_resource"].items())[:12])  # fmt: skip
        lines.append(f"N={n} requests per model by resource: {top}")
    return "operator scale (kmock emulator)\n" + "\n".join(lines)


def render_markdown(res: dict[str, Any]) -> str:
    header, rows = table(res)
    s_any = next(iter(res["summary"].values()))
    out = [
        "## Operator scale (`benchmarks/operator_scale.py`)",
        "",
        "The real `mlwarden operator` (kopf) against kmock's Kubernetes emulator (the operator "
        "tests' `Cluster`, tests/operator/cluster.py, with an index on object lookups), on "
        "this machine: N target Deployments and Services seeded, the operator started and "
        "watching, then N ObservedModels POSTed; *reconciled* = phase `WarmingUp` and all six "
        "owned objects created (the sidecar injected and the Service repointed on the way). "
        "Production settings (MLWARDEN_RETRY_SECONDS unset: 5 s): a model takes two passes, "
        "the first creating the six objects and patching the Service and the Deployment, the "
        "second, 5 s later, confirming the injection and the detector, so a lone model takes "
        "a little over 5 s. CPU is the "
        "operator process's utime + stime from /proc over the reconcile, and over the "
        f"{res['settings']['idle_s']:g} s after it (idle; {res['settings']['idle_long_s']:g} s "
        "at the largest size, longer than the 30 s interval of the respond timer every "
        "ObservedModel has); peak RSS its VmHWM. Requests are those the "
        "emulator served to the operator (kopf's and mlwarden's clients), the benchmark's own "
        "POSTs left out. 1 and 100 are medians of "
        f"{res['settings']['repeats']} runs; 1,000 ran once, capped at "
        f"{res['settings']['timeout_s']:g} s.",
        "",
        "Command per row (one operator per run): "
        f"`{s_any['command']}` with `KUBECONFIG` pointing at the emulator, driven by "
        "`.venv/bin/python benchmarks/operator_scale.py` (or `benchmarks/run.py`).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    out.append("API requests per model, by verb and resource (the median run of each size):")
    out.append("")
    for n, s in res["summary"].items():
        top = ", ".join(f"{k} {v / max(s['reconciled'], 1):.2f}"
                        for k, v in s["by_resource"].items())  # fmt: skip
        out.append(f"- N={int(n):,}: {top}")
    out.append("")
    for n, s in res["summary"].items():
        out.append(
            f"- N={int(n):,}: startup until watching {s['startup_s']:.1f} s; POSTing the "
            f"ObservedModels took {s['create_s']:.1f} s; the emulator (this process) used "
            f"{s['emulator_cpu_s']:.1f} s of CPU meanwhile; {s['objects_in_emulator']:,} "
            f"objects stored at the end, {s['events_in_emulator']:,} of them Events; idle "
            f"requests: {json.dumps(s['idle_requests']['by_resource'])}; objects owned by "
            f"an ObservedModel, per model: {json.dumps(s['owned_per_model'])}; load average "
            "(1, 5, 15 min) at the start and end of each run: "
            + "; ".join(f"{x['start']} -> {x['end']}" for x in s["loadavg"])
        )
    out.append("")
    out += render_alerting(res.get("alerting") or {})
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="operator scale benchmark")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S)
    parser.add_argument("--alerting-only", action="store_true",
                        help="only the measurement with an active alert")  # fmt: skip
    parser.add_argument("--before-src", help="also measure the operator from this src/ tree")
    args = parser.parse_args()
    if args.alerting_only:
        with tempfile.TemporaryDirectory(prefix="mlwarden-bench-op-") as tmp_dir:
            alert_figures = run_alerting(Path(tmp_dir), before_src=args.before_src)
        print(json.dumps(alert_figures, indent=1, default=str))
        print("\n".join(render_alerting(alert_figures)))
        sys.exit(0)
    with contextlib.suppress(KeyboardInterrupt):
        figures = run(repeats=args.repeats, timeout=args.timeout, before_src=args.before_src,
                      sizes=tuple(int(x) for x in args.sizes.split(",")))  # fmt: skip
        print(figures["text"])
        print(render_markdown(figures))
