"""The detector's HTTP service: a thin shell around `core.Detector`.

    POST /v1/records   a batch in the ingest format (docs/records-api.md)
    POST /v1/labels    delayed ground truth, joined by request id and row
    POST /             KServe payload-logger CloudEvents (also on /v1/records and
                       /v1/cloudevents; recognised by the ce-type header)
    GET  /v1/status    state, reference, window, active alerts (the public shape), the
                       revisions serving and the latest signals
    GET  /v1/canary[/{revision}]   the canary verdict, always 200 (Argo Rollouts' web provider)
    POST /v1/canary    the same as Flagger's webhook: 200 Pass/Pending, 412 Fail
    GET  /metrics      Prometheus text; GET /healthz, /readyz

Evaluations run on a timer (spec.alerting.evaluationInterval); drift is also decided
as records arrive (spec.alerting.falseAlarmsPer, detector/sequential.py), and the alert
transitions that causes are reported as soon as the batch is in. When a status writer is
configured (in-cluster, or --report-to), alert state changes, reference changes and changes
of the revisions serving are written to the ObservedModel's status, with a bounded heartbeat
(`reporter.should_write`).

With a reference store (a ConfigMap in the cluster, `--reference-store DIR` outside), a
completed warm-up reference is stored and a restarted detector reloads it instead of warming
up on whatever traffic comes next (`persist.reuse_decision`), with its segments' and
embedding features' references (`Detector.restore_parts`); status.detector.reference says
which reference is in force, since when, where it is stored, and what it was stored without.
A file, URL or ConfigMap reference is read again at every start, and stored only for its
embedding features' references (sampled from the traffic: `restore_embeddings`).

The alert state (each failing check's onset and streaks, the active alerts) is stored in the
same place (`persist.encode_alert_state`) and restored on start (`persist.alerts_to_restore`),
so a detector restarted by an OOM kill, an eviction or a rollout reports the same alerts with
the same `since`: to the operator it is the same incident. It is written before the status
write that reports an alert fired or resolved, and a new or ended onset of a check that is not
alerting yet at most once per status-write interval; streak counts alone never cause a write.

With an ingest token, every POST must carry `Authorization: Bearer TOKEN`; anything else is
refused with 401 and counted (`mlwarden_detector_batches_rejected_total{reason="unauthorized"}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from dataclasses import replace
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mlwarden import __version__
from mlwarden.detector.alerts import segment_test
from mlwarden.detector.checks import Column
from mlwarden.detector.cloudevents import CloudEventError, CloudEventJoiner
from mlwarden.detector.core import Detector, build_reference
from mlwarden.detector.datafile import DataFileError, read_reference
from mlwarden.detector.embedding import compute as compute_embeddings
from mlwarden.detector.ingest import BatchError, BatchKeys, decode, parse_batch, parse_labels
from mlwarden.detector.labels import StoredLabelsError, pack
from mlwarden.detector.persist import (
    MAX_STORED_BYTES,
    StoredReference,
    StoredReferenceError,
    alerts_to_restore,
    decode_alert_state,
    decode_reference,
    encode_alert_state,
    encode_stored,
    reference_basis,
    reuse_decision,
)
from mlwarden.detector.reporter import StatusWriter, should_write
from mlwarden.detector.store import ReferenceStore
from mlwarden.ingest_auth import bearer_matches
from mlwarden.protocols import parse_exchange
from mlwarden.records import ProtocolError, finite_or_none, with_vectors
from mlwarden.spec import ObservedModel
from mlwarden.timestamps import iso

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 << 20
_UNWRITTEN = object()


class DetectorMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.info = Gauge(
            "mlwarden_detector_info", "Detector build.", ["version", "model"], registry=r
        )
        self.records = Counter(
            "mlwarden_detector_records_ingested", "Records (rows) ingested.", registry=r
        )
        self.requests = Counter(
            "mlwarden_detector_requests_ingested",
            "Request entries ingested (latency and errors).",
            registry=r,
        )
        self.rejected = Counter(
            "mlwarden_detector_batches_rejected",
            "Posts refused, by reason (unauthorized: 401; the others: 400).",
            ["reason"],
            registry=r,
        )
        self.duplicates = Counter(
            "mlwarden_detector_batches_duplicate",
            "Batches not ingested again: their Idempotency-Key was ingested lately.",
            registry=r,
        )
        self.labels = Counter(
            "mlwarden_detector_labels", "Labels received, by outcome.", ["outcome"], registry=r
        )
        self.evaluation = Histogram(
            "mlwarden_detector_evaluation_duration_seconds",
            "Time one evaluation of all checks took.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.statistic = Gauge(
            "mlwarden_detector_drift_statistic",
            "Latest drift statistic per column and test.",
            ["feature", "test"],
            registry=r,
        )
        self.p_value = Gauge(
            "mlwarden_detector_drift_p_value",
            "Latest drift p-value per column (tests that have one).",
            ["feature", "test"],
            registry=r,
        )
        self.alert = Gauge(
            "mlwarden_detector_alert_active",
            "1 while an alert is active.",
            ["type", "feature", "test"],
            registry=r,
        )
        self.alert_transitions = Counter(
            "mlwarden_detector_alert_transitions",
            "Alerts fired or resolved.",
            ["type", "transition"],
            registry=r,
        )
        self.warming_up = Gauge(
            "mlwarden_detector_warming_up", "1 until the reference is complete.", registry=r
        )
        self.window_records = Gauge(
            "mlwarden_detector_window_records", "Records in the current window.", registry=r
        )
        self.ingest_authenticated = Gauge(
            "mlwarden_detector_ingest_authenticated",
            "1 when ingest requires the bearer token, 0 when anyone may post records.",
            registry=r,
        )
        self.reference_stored = Gauge(
            "mlwarden_detector_reference_stored",
            "1 once the reference in force is in the reference store (or was loaded from it).",
            registry=r,
        )
        self.revision_share = Gauge(
            "mlwarden_detector_revision_share",
            "Share of the all-traffic window per live model revision (expired ones removed).",
            ["revision", "role"],
            registry=r,
        )
        self.canary_verdict = Gauge(
            "mlwarden_detector_canary_verdict",
            "Canary verdict per live candidate revision: 1 Pass, 0 Pending, -1 Fail.",
            ["revision", "baseline"],
            registry=r,
        )
        self.status_writes = Counter(
            "mlwarden_detector_status_writes",
            "Writes of status.alerts to the ObservedModel, by outcome.",
            ["outcome"],
            registry=r,
        )


class DetectorService:
    def __init__(
        self,
        model: ObservedModel,
        *,
        writer: StatusWriter | None = None,
        reference_dir: str | None = None,
        store: ReferenceStore | None = None,
        ingest_token: str | None = None,
    ) -> None:
        self.model = model
        self.detector = Detector(model, now=time.time())
        self.metrics = DetectorMetrics()
        self.metrics.info.labels(__version__, f"{model.namespace}/{model.name}").set(1)
        self.joiner = CloudEventJoiner()
        self.batch_keys = BatchKeys()
        self.writer = writer
        if writer is not None:
            writer.on_result = lambda outcome: self.metrics.status_writes.labels(outcome).inc()
        self.reference_dir = reference_dir
        self.reference_error: str | None = None
        self._written_reference: dict[str, Any] | object = _UNWRITTEN
        self._task: asyncio.Task[None] | None = None
        self.store = store
        self.basis = reference_basis(model.spec)
        self.reference_origin = "built" if store is None else "pending"
        self.reference_reason = "no reference store configured" if store is None else ""
        self.store_error: str | None = None
        self._stored: tuple[str, str] | None = None  # (reference id, digest) in the store
        # The segments and embedding references stored with it (`_parts`), and what the store
        # lacks of them (left out for size): status.detector.reference.storedWithout.
        self._stored_parts: tuple[Any, ...] = ()
        self._stored_without: tuple[str, ...] = ()
        # What this process lacks of the reference in force: the parts the store lacked when
        # it was restored (a store again lists them; a part only left out of an earlier store
        # is still held here, and is stored if it now fits).
        self._restored_without: tuple[str, ...] = ()
        self._reference_bytes = 0  # its stored size: the label ledger gets what it leaves
        # The label ledger's store state (status.detector.labels.store) and its last save.
        self.labels_store: dict[str, Any] = {}
        self._labels_saved: tuple[int, float] = (-1, -math.inf)  # (ledger changes, monotonic)
        self._written_labels: dict[str, Any] | None = None
        self._refused: tuple[str, tuple[Any, ...]] | None = None  # (id, parts) too large
        self.ingest_token = ingest_token
        self.metrics.ingest_authenticated.set(1 if ingest_token else 0)
        # The alert state as last stored (its onsets), and when: what a restart takes back.
        self._alerts_stored: tuple[Any, ...] = ()
        self._alerts_stored_at = 0.0
        self.alerts_reason = ""
        self._alerts_min_interval = 5.0 if writer is None else writer.min_interval
        self._publish_lock = asyncio.Lock()
        self._publishing: set[asyncio.Task[None]] = set()
        # The write policy's memory (reporter.should_write): what was last written, when, and
        # the last alert transition or revision-set change.
        self._written_revisions: tuple[Any, ...] = ()
        self._written_payload: Any = None
        self._last_write = -math.inf
        self._last_event = -math.inf
        self._gauges: set[tuple[str, ...]] = set()
        self._verdict_gauges: set[tuple[str, ...]] = set()
        self._promotion: dict[str, Any] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def load_reference(self) -> None:
        """Load a file/URL/ConfigMap reference; warm-up references build themselves."""
        ref = self.model.spec.reference
        if ref.source == "warmup":
            await self.restore_reference()
            return
        location = {
            "file": ref.path,
            "url": ref.url,
            "configMap": f"{self.reference_dir or '/etc/mlwarden/reference'}/{ref.key}",
        }[ref.source]
        assert location is not None
        try:
            raw = await asyncio.to_thread(read_reference, location, limit=ref.size)
        except DataFileError as exc:
            self.reference_error = str(exc)
            log.error("reference: %s", exc)
            raise
        spec = self.model.spec
        columns = {n: c for n, c in self.detector.columns.items()}
        if not spec.features:
            from mlwarden.detector.core import infer_type

            prediction = spec.prediction.name if spec.prediction else None
            for name, values in raw.items():
                if name not in columns:
                    kind = "prediction" if name == prediction else "feature"
                    columns[name] = Column(name, kind, infer_type(values))
        missing = [n for n in columns if n not in raw]
        if missing:
            msg = f"{location}: reference has no column(s) {', '.join(missing)}"
            self.reference_error = msg
            raise DataFileError(msg)
        now = time.time()
        reference = build_reference(raw, columns, source=f"{ref.source}:{location}", since=now)
        self.detector.set_reference(reference, now=now, raw=raw)
        log.info("reference %s: %d rows, %d columns", reference.id, reference.n, len(columns))
        await self.restore_embeddings(reference.id)

    async def restore_embeddings(self, reference: str, *, attempts: int = 4) -> None:
        """With a file, URL or ConfigMap reference, the embedding features' references (a data
        file holds no vectors: they are sampled from the traffic) come back from the store
        when stored for this same reference, spec and rebaseline token; else they warm up."""
        if self.store is None or self.detector.embeddings is None:
            return
        stored, data = await self._load_stored(attempts)
        if self.store_error is not None:
            # As with a warm-up reference, after the retries: they warm up (and status says so).
            self.store_error = f"embedding references not reloaded: {self.store_error}"
            return
        if stored is None or stored.reference.id != reference:
            return  # never stored for this reference: a first start, which warms up
        if not reuse_decision(stored, basis=self.basis, rebaseline=self.model.rebaseline).reuse:
            return
        p = stored.parts
        self.detector.embeddings.restore(
            p.embeddings, warming=p.warming, left_out=p.left_out_reason
        )
        self._stored = (stored.reference.id, stored.digest)
        self._stored_parts, self._stored_without = self._parts(), p.left_out
        self._restored_without = p.left_out
        self._reference_bytes = len(data)
        log.info("embedding references reloaded with %s (%s)", reference, self.store.where)

    async def _load_stored(self, attempts: int) -> tuple[StoredReference | None, bytes]:
        """The stored reference (None when absent) and its bytes, tried `attempts` times:
        unreachable is not "absent" (warming up now could take drifted traffic as the
        baseline). After the last failure `store_error` says why and it answers (None, b"")."""
        assert self.store is not None
        for attempt in range(attempts):
            try:
                data = await self.store.load()
                stored = decode_reference(data, where=self.store.where) if data else None
                self.store_error = None
                return stored, data or b""
            except StoredReferenceError as exc:
                self.store_error = str(exc)
                log.error("reference store: %s", exc)
                if attempt + 1 < attempts:
                    await asyncio.sleep(2**attempt)
        return None, b""

    async def restore_reference(self, *, attempts: int = 4) -> None:
        """Reload the stored warm-up reference unless the user asked for a new one."""
        if self.store is None:
            return
        stored, data = await self._load_stored(attempts)
        if self.store_error is None:
            self._reference_bytes = len(data)
        decision = reuse_decision(stored, basis=self.basis, rebaseline=self.model.rebaseline)
        if self.store_error is not None and stored is None:
            decision = replace(
                decision, reason="the reference store could not be read: warming up anew"
            )
        self.reference_reason = decision.reason
        if decision.reuse and stored is not None:
            self.detector.set_reference(stored.reference, now=time.time())
            parts = stored.parts
            self.detector.restore_parts(
                segments=parts.segments,
                embeddings=parts.embeddings,
                warming=parts.warming,
                left_out=parts.left_out_reason,
            )
            self._stored = (stored.reference.id, stored.digest)
            self._stored_parts, self._stored_without = self._parts(), parts.left_out
            self._restored_without = parts.left_out
            self.reference_origin = "restored"
            self.metrics.reference_stored.set(1)
            log.info("%s (%s)", decision.reason, self.store.where)
        else:
            self.reference_origin = "built"
            log.warning("reference: %s", decision.reason)

    async def persist_reference(self) -> None:
        """Store a completed warm-up reference once (retried at the next evaluation on error),
        and again when its parts change (an embedding reference completed). A file, URL or
        ConfigMap reference is stored for its embedding features' references only."""
        ref = self.detector.reference
        if self.store is None or ref is None:
            return
        if ref.source != "warmup" and self.detector.embeddings is None:
            return
        parts = self._parts()
        if self._stored and self._stored[0] == ref.id and self._stored_parts == parts:
            return
        if self._refused == (ref.id, parts):
            return
        segments = self.detector.segments
        embeddings = self.detector.embeddings
        try:
            encoded = encode_stored(
                ref,
                basis=self.basis,
                rebaseline=self.model.rebaseline,
                segments=segments.references() if segments is not None else (),
                embeddings=embeddings.reference_states() if embeddings is not None else None,
                warming=embeddings.warming() if embeddings is not None else (),
                # stored again (an embedding reference completed): what a restore lacked, it
                # lacks (what an earlier store of this process left out, it still holds)
                missing=self._restored_without
                if self._stored and self._stored[0] == ref.id
                else (),
            )
        except StoredReferenceError as exc:
            self._refused = (ref.id, parts)
            self.store_error = f"not stored: {exc}"
            log.error("reference %s %s", ref.id, self.store_error)
            return
        data, digest = encoded.data, encoded.digest
        info = {"id": ref.id, "digest": digest, "records": str(ref.n), "since": iso(ref.since)}
        if self.model.rebaseline is not None:
            info["rebaseline"] = self.model.rebaseline
        try:
            # A stored ledger that would leave this reference too little room goes first (it is
            # stored again, within the new budget, at the next save).
            if (self.labels_store.get("bytes") or 0) > self.store.labels_budget(len(data)):
                await self.store.drop_labels()
                self.labels_store.update(bytes=None, storedIn=None)
                self._labels_saved = (-1, -math.inf)
            await self.store.save(data, info=info)
        except StoredReferenceError as exc:
            self.store_error = str(exc)
            log.error("reference %s not stored (retrying): %s", ref.id, exc)
            return
        self._stored = (ref.id, digest)
        self._stored_parts, self._stored_without = parts, encoded.left_out
        if encoded.left_out:
            log.warning(
                "reference %s stored without %s: over %d KiB with them",
                ref.id,
                ", ".join(encoded.left_out),
                MAX_STORED_BYTES >> 10,
            )
        self._reference_bytes = len(data)
        self.store_error = None
        self.metrics.reference_stored.set(1)
        log.info("reference %s stored in %s (%d bytes)", ref.id, self.store.where, len(data))

    def _parts(self) -> tuple[Any, ...]:
        """What of the segments' and embedding references would be stored now: a change
        (an embedding reference completing after the tabular one) stores the reference again."""
        segments, embeddings = self.detector.segments, self.detector.embeddings
        return (
            tuple((r.column, r.judged) for r in segments.references()) if segments else (),
            tuple(sorted(embeddings.reference_states())) if embeddings else (),
        )

    async def restore_alerts(self) -> None:
        """Take back the stored alert state that still applies (after the reference is set)."""
        if self.store is None:
            return
        try:
            data = await self.store.load_alerts()
            if not data:
                return
            stored = decode_alert_state(data, where=f"{self.store.where} (alerts)")
            ref = self.detector.reference
            tracks, self.alerts_reason = alerts_to_restore(
                stored, reference=ref.id if ref is not None else None
            )
            self.detector.alerts.restore(tracks)
        except StoredReferenceError as exc:
            # Not fatal: the alerts are judged anew (as before alert state was stored).
            self.alerts_reason = f"alert state not restored: {exc}"
            log.error("%s", self.alerts_reason)
            return
        except (KeyError, TypeError, ValueError) as exc:
            self.alerts_reason = f"alert state not restored: {self.store.where}: {exc!r}"
            log.error("%s", self.alerts_reason)
            return
        self._alerts_stored = self.detector.alerts.onsets()
        for a in self.detector.alerts.active:
            self.metrics.alert.labels(a.type, a.feature or "", segment_test(a.test, a.segment)).set(
                1
            )
        active = self.detector.alerts.active
        log.info(
            "%s: %d active alert(s) %s",
            self.alerts_reason,
            len(active),
            [f"{a.type}/{a.feature or a.test} since {a.since}" for a in active],
        )

    async def persist_alerts(self, *, urgent: bool) -> None:
        """Store the alert state if its onsets changed: at once when `urgent` (an alert fired
        or resolved, about to be reported), else at most once per write interval."""
        if self.store is None:
            return
        onsets = self.detector.alerts.onsets()
        if onsets == self._alerts_stored:
            return
        now = time.monotonic()
        if not urgent and now - self._alerts_stored_at < self._alerts_min_interval:
            return
        ref = self.detector.reference
        data = encode_alert_state(
            self.detector.alerts.state(),
            reference=ref.id if ref is not None else None,
            saved_at=iso(time.time()),
        )
        try:
            await self.store.save_alerts(data)
        except StoredReferenceError as exc:
            self.store_error = f"alert state not stored (retrying): {exc}"
            log.error("%s", self.store_error)
            return
        self._alerts_stored, self._alerts_stored_at = onsets, now

    async def restore_labels(self) -> None:
        """Take back the stored label ledger: predictions still waiting for labels and the
        labels joined so far, by prediction-time bucket (not fatal when unreadable)."""
        if self.store is None:
            return
        try:
            data = await self.store.load_labels()
            if data is None:
                self.labels_store = {"restored": 0}
                return
            restored = self.detector.labels.restore(
                data, where=f"{self.store.where} (labels)", now=time.time()
            )
        except (StoredReferenceError, StoredLabelsError) as exc:
            self.labels_store = {"restored": 0, "error": f"label ledger not restored: {exc}"}
            log.error("%s", self.labels_store["error"])
            return
        self.labels_store = {"restored": restored, "bytes": len(data)}
        log.info("label ledger restored: %d predictions waiting for labels", restored)

    async def persist_labels(self, *, force: bool) -> None:
        """Store the label ledger when it changed, at most every LABELS_SAVE_SECONDS (and
        once more on SIGTERM, `force`): a SIGKILL loses at most that much of it."""
        ledger = self.detector.labels
        changes, saved_at = self._labels_saved
        now = time.monotonic()
        if self.store is None or ledger.changes == changes:
            return
        if not force and now - saved_at < LABELS_SAVE_SECONDS:
            return
        ref = self.detector.reference
        stored = self._stored is not None and ref is not None and self._stored[0] == ref.id
        if ref is None or (ref.source == "warmup" and not stored):
            return  # the warm-up reference is stored first: the ledger gets the room it leaves
        budget = self.store.labels_budget(self._reference_bytes)
        snapshot = ledger.snapshot(iso(time.time()))
        snapped = ledger.changes
        try:
            # Compressing 200,000 waiting predictions takes ~0.5 s of CPU: not on the loop.
            data, cut = await asyncio.to_thread(pack, snapshot, budget)
            await self.store.save_labels(data)
        except (StoredReferenceError, StoredLabelsError) as exc:
            self.labels_store["error"] = f"label ledger not stored (retrying): {exc}"
            log.error("%s", self.labels_store["error"])
            self._labels_saved = (changes, now)  # retried after the interval, not at once
            return
        ledger.cut = cut
        self._labels_saved = (snapped, now)
        self.labels_store["error"] = None
        self.labels_store.update(
            storedIn=self.store.where, bytes=len(data), savedAt=iso(time.time())
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._evaluate_forever(), name="mlwarden-evaluate")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._publishing):  # alerts fired at ingest, still being reported
            with contextlib.suppress(Exception):
                await task
        with contextlib.suppress(Exception):  # best effort: a crash would not get this far
            await self.persist_alerts(urgent=True)
        with contextlib.suppress(Exception):
            await self.persist_labels(force=True)
        if self.writer is not None:
            await self.writer.close()
        if self.store is not None:
            await self.store.close()

    async def _evaluate_forever(self) -> None:
        interval = self.model.spec.alerting.evaluation_interval_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.evaluate_once()
            except Exception:  # pragma: no cover - keep evaluating whatever one round did
                log.exception("evaluation failed")

    async def evaluate_once(self) -> None:
        started = time.perf_counter()
        embeddings = self.detector.embeddings
        if embeddings is not None:
            # MMD over the embedding samples takes 0.1-0.6 s of CPU: on a thread over copies,
            # so that ingest, probes and /metrics are answered meanwhile (numpy releases the
            # GIL in the kernel's matrix products).
            snap = embeddings.snapshot(self.model.spec.detectors.drift)
            if snap is not None:
                embeddings.prepare(await asyncio.to_thread(compute_embeddings, snap))
        now = time.time()
        transitions = self.detector.take_transitions()
        transitions += self.detector.evaluate(now=now, now_iso=iso(now))
        m = self.metrics
        m.evaluation.observe(time.perf_counter() - started)
        m.warming_up.set(1 if self.detector.warming_up else 0)
        if self.detector.window is not None:
            m.window_records.set(self.detector.window.view().n_records)
        for ev in self.detector.last_evidence:
            drift = ev.type in ("FeatureDrift", "PredictionDrift")
            if drift and ev.feature is not None and ev.segment is None:
                m.statistic.labels(ev.feature, ev.test).set(ev.statistic)
                if ev.p_value is not None:
                    m.p_value.labels(ev.feature, ev.test).set(ev.p_value)
        await self.publish(transitions)

    def _after_ingest(self) -> None:
        """Report what the sequential drift decisions fired or resolved, without waiting."""
        transitions = self.detector.take_transitions()
        if transitions:
            task = asyncio.create_task(self.publish(transitions), name="mlwarden-publish")
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def publish(self, transitions: list[Any]) -> None:
        """Metrics, logs, the stored alert state and the status write for `transitions`."""
        async with self._publish_lock:
            await self._publish(transitions)

    async def _publish(self, transitions: list[Any]) -> None:
        m = self.metrics
        for t in transitions:
            a = t.alert
            test = segment_test(a.test, a.segment)
            m.alert.labels(a.type, a.feature or "", test).set(1 if t.kind == "fired" else 0)
            m.alert_transitions.labels(a.type, t.kind).inc()
            log.warning("alert %s: %s %s %s (%s)", t.kind, a.type, a.feature or "", test, a.message)
        self._revision_metrics()
        if self.detector.promotion is not None and self.detector.promotion != self._promotion:
            self._promotion = self.detector.promotion
            self.reference_reason = (
                f"promoted: revision {self._promotion['revision']} passed its canary and "
                f"became the only revision; the prediction reference moved to it from "
                f"{self._promotion['promotedFrom']}"
            )
            log.warning("reference %s", self.reference_reason)
        await self.persist_reference()
        # Stored before the status write reports it: once the operator may act on an alert,
        # a restarted detector must report the same one.
        await self.persist_alerts(urgent=bool(transitions))
        await self.persist_labels(force=False)
        await self._report(transitions=bool(transitions), now=time.monotonic())

    async def _report(self, *, transitions: bool, now: float) -> None:
        """Write status when the policy says so (reporter.should_write)."""
        reference = self._reference_status()
        revisions = self.detector.revision_status(iso)
        signals = self.detector.signals()
        alerts = [a.to_dict() for a in self.detector.alerts.active]
        shape = tuple(
            (r["revision"], r["role"], (r.get("canary") or {}).get("verdict")) for r in revisions
        )
        revisions_changed = shape != self._written_revisions
        if transitions or revisions_changed:
            self._last_event = now
        labels = self._labels_status()
        payload = (alerts, reference, revisions, signals)
        # Label coverage alone writes at most every LABELS_STATUS_SECONDS; it rides along
        # with every other write.
        labels_due = (
            labels != self._written_labels and now - self._last_write >= LABELS_STATUS_SECONDS
        )
        if self.writer is None or not (
            labels_due
            or should_write(
                transitions=transitions,
                reference_changed=reference != self._written_reference,
                revisions_changed=revisions_changed,
                payload_changed=payload != self._written_payload,
                alert_active=bool(alerts),
                since_last_event=now - self._last_event,
                since_last_write=now - self._last_write,
                verify_within=_verify_within(self.model),
            )
        ):
            return
        await self.writer.write_alerts(
            alerts, reference=reference, revisions=revisions, signals=signals, labels=labels
        )
        self._written_labels = labels
        self._written_reference = reference
        self._written_revisions = shape
        self._written_payload = payload
        self._last_write = now

    def _revision_metrics(self) -> None:
        """One gauge series per live revision; expired revisions' series are removed."""
        m = self.metrics
        shares = {
            (r["revision"], r["role"]): r["share"] for r in self.detector.revision_status(iso)
        }
        for key in self._gauges - shares.keys():
            m.revision_share.remove(*key)
        for key, share in shares.items():
            m.revision_share.labels(*key).set(share)
        self._gauges = set(shares)
        baseline = self.detector.baseline or ""
        verdicts = {(rev, baseline): v for rev, v in self.detector.verdicts.items()}
        for key in self._verdict_gauges - verdicts.keys():
            m.canary_verdict.remove(*key)
        for key, v in verdicts.items():
            m.canary_verdict.labels(*key).set(_VERDICT_VALUE[v])
        self._verdict_gauges = set(verdicts)

    def _labels_status(self) -> dict[str, Any]:
        """`labels` of /v1/status and status.detector: the ledger's coverage, and its store."""
        out = self.detector.status_labels()
        # Every key always there: status.detector is written as a merge patch.
        keys = ("restored", "storedIn", "bytes", "savedAt", "error")
        out["store"] = {k: self.labels_store.get(k) for k in keys}
        return out

    def _reference_status(self) -> dict[str, Any]:
        """status.detector.reference: which reference is in force, since when, where stored."""
        ref = self.detector.reference
        out: dict[str, Any] = {"id": None, "since": None}
        if ref is not None:
            stored = self._stored is not None and self._stored[0] == ref.id
            out = {
                "id": ref.id,
                "since": iso(ref.since),
                "source": ref.source,
                "records": ref.n,
                "origin": self.reference_origin,
                "hash": self._stored[1][:16] if stored and self._stored else None,
                "storedIn": self.store.where if stored and self.store else None,
            }
        if self.reference_reason:
            out["reason"] = self.reference_reason
        if self.alerts_reason:
            out["alertState"] = self.alerts_reason
        if self.model.rebaseline is not None:
            out["rebaseline"] = self.model.rebaseline
        if self.store_error is not None:
            out["storeError"] = self.store_error
        if self._stored_without and ref is not None and out.get("hash") is not None:
            out["storedWithout"] = (
                f"{', '.join(self._stored_without)}: left out for size (over "
                f"{MAX_STORED_BYTES >> 10} KiB with them); not judged after a restart"
            )
        if ref is not None and self.detector.reference_revision is not None:
            out["revision"] = self.detector.reference_revision
        if self._promotion is not None and ref is not None and ref.id == self._promotion["id"]:
            out.update(
                promotedFrom=self._promotion["promotedFrom"],
                revision=self._promotion["revision"],
                previous=self._promotion["previous"],
            )
        return out

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every POST (records, labels, CloudEvents) needs the ingest token, when one is set."""
        if (
            request.method == "POST"
            and request.path != "/v1/canary"  # a verdict query (Flagger's webhook): ingests nothing
            and self.ingest_token is not None
            and not bearer_matches(request.headers.get("Authorization"), self.ingest_token)
        ):
            self.metrics.rejected.labels("unauthorized").inc()
            why = "missing" if "Authorization" not in request.headers else "wrong"
            return web.json_response(
                {
                    "error": f"unauthorized: {why} ingest token; send Authorization: Bearer "
                    "<the token in Secret NAME-ingest-token>"
                },
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="mlwarden-detector"'},
            )
        response: web.StreamResponse = await handler(request)
        return response

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self._authenticate])
        app.router.add_post("/v1/records", self.post_records)
        app.router.add_post("/v1/labels", self.post_labels)
        app.router.add_post("/v1/cloudevents", self.post_records)
        app.router.add_post("/", self.post_records)
        app.router.add_get("/v1/status", self.get_status)
        app.router.add_get("/v1/canary", self.get_canary)
        app.router.add_get("/v1/canary/{revision}", self.get_canary)
        app.router.add_post("/v1/canary", self.post_canary)
        app.router.add_get("/metrics", self.get_metrics)
        app.router.add_get("/healthz", self.get_healthz)
        app.router.add_get("/readyz", self.get_readyz)
        return app

    def _reject(self, reason: str, message: str) -> web.Response:
        self.metrics.rejected.labels(reason).inc()
        return web.json_response({"error": message}, status=400)

    async def post_records(self, request: web.Request) -> web.Response:
        body = await request.read()
        ce_type = request.headers.get("ce-type")
        if ce_type is not None:
            return await self._cloudevent(request, ce_type, body)
        if request.path == "/":
            return self._reject(
                "not_a_batch",
                "POST / takes KServe CloudEvents (ce-type header); "
                "send record batches to /v1/records",
            )
        now = time.time()
        key = request.headers.get("Idempotency-Key")
        try:
            if key is not None:
                BatchKeys.check(key)
                if self.batch_keys.seen(key):  # a re-send of a batch ingested already
                    self.metrics.duplicates.inc()
                    return web.json_response({"accepted": 0, "requests": 0, "duplicate": True})
            batch = parse_batch(decode(body), now=now)
        except BatchError as exc:
            return self._reject("malformed", str(exc))
        self.detector.ingest(batch, now=now)
        if key is not None:  # remembered once ingested: a rejected batch may come back fixed
            self.batch_keys.add(key)
        self._after_ingest()
        self.metrics.records.inc(batch.n_records)
        self.metrics.requests.inc(len(batch.statuses))
        return web.json_response({"accepted": batch.n_records, "requests": len(batch.statuses)})

    async def _cloudevent(self, request: web.Request, ce_type: str, body: bytes) -> web.Response:
        now = time.time()
        try:
            joined = self.joiner.offer(
                ce_type=ce_type, ce_id=request.headers.get("ce-id", ""), body=body, now=now
            )
        except CloudEventError as exc:
            return self._reject("cloudevent", str(exc))
        if joined is None:
            return web.json_response({"accepted": 0, "pending": True}, status=202)
        try:
            protocol, rows = parse_exchange(
                self.model.spec.protocol,
                joined.path,
                joined.request,
                joined.response,
                self.model.spec,
            )
        except ProtocolError as exc:
            return self._reject("unparseable", f"ce-id {joined.id}: {exc}")
        source: dict[str, Any] = {"kserveLogger": True}
        # KServe's logger names the InferenceService's endpoint (default or canary) and the
        # component in CloudEvent extension attributes: the revision of the exchange.
        endpoint = request.headers.get("ce-endpoint")
        if endpoint:
            component = request.headers.get("ce-component")
            source["modelRevision"] = (
                endpoint if component in (None, "", "predictor") else f"{component}-{endpoint}"
            )
        payload = {
            "source": source,
            "records": [
                {
                    "id": joined.id,
                    "row": r.row,
                    "ts": now,
                    "features": with_vectors(r.features, r.vectors),
                    "outputs": with_vectors(r.outputs, r.output_vectors),
                }
                for r in rows
            ],
        }
        batch = parse_batch(payload, now=now)
        self.detector.ingest(batch, now=now)
        self._after_ingest()
        self.metrics.records.inc(batch.n_records)
        return web.json_response({"accepted": batch.n_records, "protocol": protocol})

    async def post_labels(self, request: web.Request) -> web.Response:
        try:
            labels = parse_labels(decode(await request.read()))
        except BatchError as exc:
            return self._reject("malformed_labels", str(exc))
        joined, unmatched = self.detector.add_labels(labels, now=time.time())
        self.metrics.labels.labels("joined").inc(joined)
        self.metrics.labels.labels("unmatched").inc(unmatched)
        return web.json_response({"joined": joined, "unmatched": unmatched})

    async def get_status(self, _: web.Request) -> web.Response:
        status = self.detector.status()
        status["reference"].update(
            {k: v for k, v in self._reference_status().items() if k not in ("id", "since")}
        )
        status["labels"] = self._labels_status()
        status["ingestAuth"] = "bearer" if self.ingest_token else "none"
        status["revisions"] = self.detector.revision_status(iso)
        status["signals"] = self.detector.signals()
        if self.reference_error:
            status["referenceError"] = self.reference_error
        return web.json_response(status, dumps=_dumps)

    def _canary_answer(self, revision: str | None) -> tuple[dict[str, Any], int]:
        """The verdict for `revision` (None: the one candidate, when exactly one serves)."""
        d = self.detector
        if revision is None:
            candidates = sorted(r.name for r in d.candidates())
            if len(candidates) > 1:
                return (
                    {
                        "error": f"{len(candidates)} candidate revisions serve "
                        f"({', '.join(candidates)}); name one: /v1/canary/REVISION",
                        "revisions": [r["revision"] for r in d.revision_status(iso)],
                    },
                    409,
                )
            if not candidates:
                return (
                    {
                        "revision": None,
                        "role": "unknown",
                        "verdict": "Pending",
                        "baseline": d.baseline,
                        "samples": 0,
                        "minSamples": self.model.spec.canary.min_samples,
                        "evidence": [],
                        "message": "no candidate revision serves",
                        "passed": False,
                        "failed": False,
                    },
                    200,
                )
            revision = candidates[0]
        report = d.canary_report(revision)
        if report is None:
            live = ", ".join(sorted(d.revisions)) or "none"
            # Not serving (yet): a rollout's new pods may not have had traffic. Pending, not an
            # error, so an analysis waits rather than failing.
            report = {
                "revision": revision,
                "role": "unknown",
                "verdict": "Pending",
                "baseline": d.baseline,
                "samples": 0,
                "minSamples": self.model.spec.canary.min_samples,
                "evidence": [],
                "message": f"revision {revision!r} has sent no records (live revisions: {live})",
            }
        report["passed"] = report["verdict"] == "Pass"
        report["failed"] = report["verdict"] == "Fail"
        return report, 200

    async def get_canary(self, request: web.Request) -> web.Response:
        """GET /v1/canary[/{revision}]: the verdict as JSON, 200 whatever it is (Argo Rollouts'
        web provider reads `verdict` with its jsonPath; a non-2xx would be an Error, not a
        Failure); a revision that sent nothing yet is Pending. 409 when no revision is named
        and several candidates serve."""
        revision = request.match_info.get("revision") or request.query.get("revision")
        body, status = self._canary_answer(revision)
        return web.json_response(body, status=status, dumps=_dumps)

    async def post_canary(self, request: web.Request) -> web.Response:
        """POST /v1/canary: Flagger's webhook. Flagger passes a check on any 2xx and fails it on
        anything else, so Fail answers 412; Pending answers 200 (not enough traffic is not a
        failure) unless the webhook's metadata says `pending: fail` (a confirm-promotion gate).
        The revision: `metadata.revision`, else `?revision=`, else the one candidate."""
        raw = await request.read()
        try:
            payload = decode(raw) if raw.strip() else {}
        except BatchError as exc:
            return self._reject("malformed_canary", str(exc))
        metadata = payload.get("metadata") if isinstance(payload, dict) else None
        metadata = metadata if isinstance(metadata, dict) else {}
        revision = metadata.get("revision") or request.query.get("revision")
        body, status = self._canary_answer(str(revision) if revision else None)
        if status == 200:
            pending_fails = str(metadata.get("pending", "pass")).lower() == "fail"
            if body["verdict"] == "Fail" or (body["verdict"] == "Pending" and pending_fails):
                status = 412
        if isinstance(payload, dict):
            body["canary"] = {k: payload.get(k) for k in ("name", "namespace", "phase")}
        return web.json_response(body, status=status, dumps=_dumps)

    async def get_metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def get_healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def get_readyz(self, _: web.Request) -> web.Response:
        ready = self.reference_error is None
        return web.json_response(
            {"ready": ready, "referenceError": self.reference_error}, status=200 if ready else 503
        )


LABELS_SAVE_SECONDS = 30.0  # the label ledger is stored at most this often (and on SIGTERM)
LABELS_STATUS_SECONDS = 300.0  # label coverage alone updates status.detector this often

_VERDICT_VALUE = {"Pass": 1.0, "Pending": 0.0, "Fail": -1.0}


def _verify_within(model: ObservedModel) -> float:
    """spec.guardrails.verifyWithin: how long after a change the operator may still be
    verifying an action, so how long the detector keeps its status fresh."""
    return model.spec.guardrails.verify_within_seconds


def _dumps(obj: Any) -> str:
    """JSON for /v1/status: a check's statistic may be NaN, which JSON cannot hold."""
    import json

    def clean(x: Any) -> Any:
        if isinstance(x, float):
            return finite_or_none(x)
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj))


async def serve(
    model: ObservedModel,
    listen: tuple[str, int],
    *,
    writer: StatusWriter | None,
    reference_dir: str | None = None,
    store: ReferenceStore | None = None,
    ingest_token: str | None = None,
) -> None:
    service = DetectorService(
        model, writer=writer, reference_dir=reference_dir, store=store, ingest_token=ingest_token
    )
    if ingest_token is None:
        log.warning(
            "no ingest token (--ingest-token-file / MLWARDEN_INGEST_TOKEN): anyone who can "
            "reach this port can post records and shape the reference"
        )
    await service.load_reference()
    await service.restore_alerts()
    await service.restore_labels()
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, listen[0], listen[1]).start()
    service.start()
    log.info(
        "mlwarden detector for %s/%s on %s:%s (%s)",
        model.namespace,
        model.name,
        listen[0],
        listen[1],
        "reporting to the API" if writer else "serving only",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await service.stop()
