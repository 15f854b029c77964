"""Predictions kept for their labels for days, bounded, and what the joined labels say.

Ground truth often comes days after the prediction (a chargeback, a delivery, a human
review). `LabelLedger` keeps what a late label needs and credits each label to the
prediction-time bucket and revision of its prediction (`stats/labels.py`):

- `record`: each prediction of a batch with a request id becomes a compact `Prediction`
  (when it was made, by which revision, the predicted value, made during the warm-up or
  not), keyed by (request id, row), and counts in its bucket's `Tally`. At most `capacity`
  predictions wait (MAX_PREDICTIONS); beyond it the oldest waiting one is dropped and
  counted (`dropped`): a label for it comes back unmatched.
- `join`: a label finds its waiting prediction (a second label for the same one finds
  nothing: unmatched), goes into the confusion table of the prediction's bucket and
  revision, and its lag (label time − prediction time) into a bounded sample (MAX_LAGS).
  A label whose prediction left the join window is unmatched.
- `expire(now)`: predictions older than the join window are forgotten unlabelled
  (`expired`), and so are buckets that ended before it and lags older than it. Tallies
  are at most MAX_TALLIES (bucket × revision); beyond that the oldest buckets go whole
  (`talliesDropped`).
- `judged(min_labels)`: the bucket the labelled performance check judges (the newest
  with enough labels); `pairs(revision, since)`: a revision's labelled rows predicted
  since a moment (the canary's same-span comparison).
- `labelled_performance`: the performance check on the judged bucket's confusion table
  (against `checks.labelled_level`, decided by `checks.performance_drop`), its alert naming
  the revision that made most of its labelled predictions; CBPE on the current window
  (`checks.check_performance`) while no bucket has enough labels.
- `snapshot` / `pack` (`encode`: both) / `restore`: the ledger as stored next to the
  reference (gzip'd JSON, within a byte budget: the newest waiting predictions are kept,
  the oldest cut and counted). `pack` reads only the snapshot: the service runs it on a
  thread while ingest goes on.

Pure: times come in as arguments; `store.py` moves the bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mlwarden.detector.alerts import Evidence
from mlwarden.detector.checks import (
    MIN_LABELS,
    ReferenceSummary,
    WindowView,
    check_performance,
    labelled_level,
    performance_drop,
    safe_metric,
)
from mlwarden.records import Value
from mlwarden.spec import PerformanceCheck
from mlwarden.stats.labels import (
    Tally,
    bucket_start,
    cells_metric,
    lag_percentiles,
    merged,
    newest_judged,
    scaled_pairs,
)
from mlwarden.timestamps import iso

MAX_PREDICTIONS: Final = 200_000  # predictions awaiting a label
MAX_TALLIES: Final = 4096  # (bucket, revision) tallies in the join window
MAX_LAGS: Final = 10_000  # label lags kept for the percentiles (the newest)
MAX_PAIRS: Final = 20_000  # labelled rows a canary comparison reads per revision
MAX_STATUS_BUCKETS: Final = 24  # the newest buckets status shows
MAX_STATUS_REVISIONS: Final = 16  # revisions status shows (most predictions first)
FORMAT: Final = "mlwarden.io/labels/v1"

Key = tuple[str, int]  # (request id, row)


class StoredLabelsError(ValueError):
    """A stored ledger that cannot be read back, or one that does not fit its budget."""


@dataclass(slots=True)
class Prediction:
    """What a late label needs of its prediction."""

    at: float  # when the detector received it (seconds since the epoch)
    revision: str | None
    value: Value  # the predicted value (a number, string or boolean; else None)
    warmup: bool  # made while the reference warmed up: its label sets the reference level


@dataclass
class Joined:
    """The outcome of one `join`: the labels joined (with their predictions), the rest."""

    joined: list[tuple[Prediction, Value]] = field(default_factory=list)
    unmatched: int = 0


def _scalar(value: Value) -> Value:
    """A prediction as a confusion table can hold it: a number, string or boolean."""
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


class LabelLedger:
    """Predictions awaiting labels over `join_window` seconds, credited by `bucket` seconds."""

    def __init__(
        self, *, join_window: float, bucket: float, capacity: int = MAX_PREDICTIONS
    ) -> None:
        self.join_window = join_window
        self.bucket = bucket
        self.capacity = capacity
        self.waiting: OrderedDict[Key, Prediction] = OrderedDict()
        self.tallies: dict[tuple[float, str | None], Tally] = {}
        self.lags: deque[tuple[float, float, str | None]] = deque(maxlen=MAX_LAGS)
        self.joined = 0
        self.unmatched = 0
        self.dropped = 0  # waiting predictions dropped because `capacity` were waiting
        self.expired = 0  # waiting predictions that left the join window unlabelled
        self.tallies_dropped = 0
        self.cut = 0  # waiting predictions left out of the latest stored form (its budget)
        self.judged_start: float | None = None  # the bucket the latest evaluation judged
        self.changes = 0  # counts every change: what a store compares to skip a save

    # ------------------------------------------------------------------ join

    def _tally(self, start: float, revision: str | None) -> Tally:
        key = (start, revision)
        tally = self.tallies.get(key)
        if tally is None:
            while len(self.tallies) >= MAX_TALLIES:
                oldest = min(s for s, _ in self.tallies)
                for k in [k for k in self.tallies if k[0] == oldest]:
                    del self.tallies[k]
                    self.tallies_dropped += 1
            tally = self.tallies[key] = Tally()
        return tally

    def record(
        self,
        keys: Sequence[Key],
        values: Sequence[Value],
        *,
        revision: str | None,
        warmup: bool,
        now: float,
    ) -> None:
        """Remember a batch's predictions (those with a request id), made `now`."""
        tally = self._tally(bucket_start(now, self.bucket), revision)
        waiting = self.waiting
        for key, value in zip(keys, values, strict=True):
            if not key[0]:
                continue
            waiting.pop(key, None)  # the same id again: the latest prediction waits
            waiting[key] = Prediction(now, revision, _scalar(value), warmup)
            tally.predicted += 1
        self.changes += 1
        while len(waiting) > self.capacity:
            waiting.popitem(last=False)
            self.dropped += 1

    def join(self, labels: Iterable[tuple[str, int, Value]], *, now: float) -> Joined:
        """Join labels to their waiting predictions, credited to the predictions' buckets."""
        out = Joined()
        horizon = now - self.join_window
        for rid, row, label in labels:
            p = self.waiting.pop((rid, row), None)
            if p is None or p.at < horizon:
                out.unmatched += 1
                continue
            tally = self._tally(bucket_start(p.at, self.bucket), p.revision)
            if p.warmup:
                tally.labelled += 1  # coverage only: it is the reference level's
            else:
                tally.add_label(label, p.value)
            self.lags.append((now, max(0.0, now - p.at), p.revision))
            out.joined.append((p, label))
        self.joined += len(out.joined)
        self.unmatched += out.unmatched
        self.changes += 1
        return out

    def expire(self, now: float) -> None:
        """Forget what left the join window."""
        horizon = now - self.join_window
        waiting = self.waiting
        while waiting:
            key = next(iter(waiting))
            if waiting[key].at >= horizon:
                break
            del waiting[key]
            self.expired += 1
            self.changes += 1
        for bucket in [k for k in self.tallies if k[0] + self.bucket <= horizon]:
            del self.tallies[bucket]
        while self.lags and self.lags[0][0] < horizon:
            self.lags.popleft()

    # ------------------------------------------------------------------ reading

    def judged(self, min_labels: int) -> tuple[float, Tally] | None:
        """The bucket the labelled performance check judges: the newest with `min_labels`
        labels of predictions made after the warm-up (all revisions together)."""
        return newest_judged(self.tallies, min_labels)

    def pairs(
        self, revision: str | None, since: float, *, limit: int = MAX_PAIRS
    ) -> list[tuple[Value, Value]]:
        """(label, prediction) rows of `revision`'s predictions made in buckets that end
        after `since`: all of them up to `limit`, else `limit` rows in the same proportions
        (`scaled_pairs`)."""
        cells = merged(
            t
            for (start, rev), t in self.tallies.items()
            if rev == revision and start + self.bucket > since
        ).cells
        return scaled_pairs(cells, limit)

    def status(self, metric: str, iso: Callable[[float], str]) -> dict[str, Any]:
        """`labels` of /v1/status and status.detector: coverage in the join window (all, per
        revision, per bucket), the late-label lag percentiles, what was not joined."""
        total = merged(self.tallies.values())
        revisions: dict[str | None, list[Tally]] = {}
        buckets: dict[float, list[Tally]] = {}
        for (start, rev), t in self.tallies.items():
            revisions.setdefault(rev, []).append(t)
            buckets.setdefault(start, []).append(t)
        per_revision = []
        for rev in sorted(revisions, key=lambda r: (r is None, r or "")):
            t = merged(revisions[rev])
            lags = [lag for _, lag, r in self.lags if r == rev]
            per_revision.append(
                {"revision": rev, **_coverage(t, metric), "lagSeconds": lag_percentiles(lags)}
            )
        per_revision.sort(key=lambda r: -int(r["predicted"]))
        del per_revision[MAX_STATUS_REVISIONS:]
        newest = sorted(buckets, reverse=True)[:MAX_STATUS_BUCKETS]
        judged = self.judged_start
        return {
            "joined": self.joined,
            "unmatched": self.unmatched,
            "joinWindowSeconds": self.join_window,
            "bucketSeconds": self.bucket,
            "metric": metric,
            **_coverage(total, metric),
            "waiting": len(self.waiting),
            "capacity": self.capacity,
            "dropped": self.dropped,
            "expired": self.expired,
            "talliesDropped": self.tallies_dropped,
            "notStored": self.cut,
            "lagSeconds": lag_percentiles([lag for _, lag, _ in self.lags]),
            "revisions": per_revision,
            "buckets": [{"start": iso(s), **_coverage(merged(buckets[s]), metric)} for s in newest],
            "judgedBucket": None if judged is None else iso(judged),
        }

    # ------------------------------------------------------------------ stored form

    def encode(self, *, saved_at: str, budget: int) -> bytes:
        """The ledger as stored, in at most `budget` bytes (`snapshot`, then `pack`)."""
        data, self.cut = pack(self.snapshot(saved_at), budget)
        return data

    def snapshot(self, saved_at: str) -> dict[str, Any]:
        """The ledger as plain data (the stored form before `pack`): its own copies, so it may
        be packed on another thread while the ledger moves on."""
        names: dict[str | None, int] = {}

        def index(rev: str | None) -> int:
            return names.setdefault(rev, len(names))

        waiting = list(self.waiting.items())
        return {
            "format": FORMAT,
            "savedAt": saved_at,
            "joinWindowSeconds": self.join_window,
            "bucketSeconds": self.bucket,
            "counters": {
                "joined": self.joined,
                "unmatched": self.unmatched,
                "dropped": self.dropped,
                "expired": self.expired,
                "talliesDropped": self.tallies_dropped,
                "notStored": 0,  # set by `pack`
            },
            # Oldest first: `pack` cuts from the front.
            "waiting": {
                "id": [k[0] for k, _ in waiting],
                "row": [k[1] for k, _ in waiting],
                "at": [p.at for _, p in waiting],
                "revision": [index(p.revision) for _, p in waiting],
                "value": [p.value for _, p in waiting],
                "warmup": [int(p.warmup) for _, p in waiting],
            },
            "tallies": [
                [
                    s,
                    index(rev),
                    t.predicted,
                    t.labelled,
                    t.overflow,
                    [[*c, n] for c, n in t.cells.items()],
                ]
                for (s, rev), t in self.tallies.items()
            ],
            "lags": [[at, lag, index(rev)] for at, lag, rev in self.lags],
            "revisions": list(names),
        }

    def restore(self, data: bytes, *, where: str, now: float) -> int:
        """Take back a stored ledger (its buckets re-cut to this ledger's width, what left the
        join window dropped); the number of waiting predictions restored.
        StoredLabelsError naming `where` when it cannot be read."""
        try:
            d = json.loads(gzip.decompress(data))
        except (OSError, EOFError, ValueError) as exc:
            raise StoredLabelsError(f"{where}: not a stored label ledger ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise StoredLabelsError(f"{where}: format {found!r}, expected {FORMAT!r}")
        try:
            names = [None if n is None else str(n) for n in d["revisions"]]
            w = d["waiting"]
            for rid, row, at, rev, value, warm in zip(
                w["id"], w["row"], w["at"], w["revision"], w["value"], w["warmup"], strict=True
            ):
                key = (str(rid), int(row))
                if key not in self.waiting:
                    self.waiting[key] = Prediction(float(at), names[rev], value, bool(warm))
            # Oldest first, as `expire` and the capacity bound read it (this run's own
            # predictions, received before the restore, are interleaved by time).
            self.waiting = OrderedDict(sorted(self.waiting.items(), key=lambda kv: kv[1].at))
            for start, rev, predicted, labelled, overflow, cells in d["tallies"]:
                t = Tally(predicted=int(predicted), labelled=int(labelled), overflow=int(overflow))
                for label, prediction, n in cells:
                    t.cells[(label, prediction)] += int(n)
                self._tally(bucket_start(float(start), self.bucket), names[rev]).merge(t)
            stored_lags = [(float(a), float(lag), names[r]) for a, lag, r in d["lags"]]
            self.lags = deque([*stored_lags, *self.lags], maxlen=MAX_LAGS)
            c = d["counters"]
            self.joined += int(c["joined"])
            self.unmatched += int(c["unmatched"])
            self.dropped += int(c["dropped"])
            self.expired += int(c["expired"])
            self.tallies_dropped += int(c["talliesDropped"])
            self.dropped += int(c["notStored"])  # left out of the store: gone now
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise StoredLabelsError(f"{where}: {exc!r}") from None
        self.expire(now)
        while len(self.waiting) > self.capacity:
            self.waiting.popitem(last=False)
            self.dropped += 1
        return len(self.waiting)


def pack(snapshot: dict[str, Any], budget: int) -> tuple[bytes, int]:
    """A `snapshot` as gzip'd JSON in at most `budget` bytes, and how many waiting predictions
    were cut for it: the newest that fit are kept, every tally, and the lags (the newest
    1,000 only when even no waiting prediction leaves room for all). Pure (no ledger), so it
    may run on another thread. StoredLabelsError when not even that fits."""
    d = dict(snapshot)
    waiting: dict[str, list[Any]] = d["waiting"]
    total = len(waiting["id"])
    keep, lags = total, len(d["lags"])
    for _ in range(8):
        d["waiting"] = {k: v[total - keep :] for k, v in waiting.items()}
        d["lags"] = snapshot["lags"][len(snapshot["lags"]) - lags :]
        d["counters"] = {**snapshot["counters"]}
        d["counters"]["notStored"] += total - keep
        data = gzip.compress(_canonical(d), mtime=0)
        if len(data) <= budget:
            return data, total - keep
        if keep == 0 and lags <= 1000:
            break
        if keep == 0:
            lags = min(lags, 1000)
        keep = int(keep * budget / len(data) * 0.9)
    raise StoredLabelsError(
        f"the label ledger does not fit the {max(budget, 0) >> 10} KiB left next to the reference "
        f"even without its {total} waiting predictions ({len(d['tallies'])} bucket tallies): "
        "a shorter labelJoinWindow or a longer labelBucket makes it smaller"
    )


def labelled_performance(
    ledger: LabelLedger,
    reference: ReferenceSummary,
    view: WindowView,
    check: PerformanceCheck | None,
    reference_labelled: Sequence[tuple[Value, Value]],
) -> list[Evidence]:
    """The performance check judged on the newest prediction-time bucket with MIN_LABELS
    labels (however late they came), else estimated on `view` (CBPE, `check_performance`).

    The bucket's metric comes from its confusion table (`cells_metric`: the cost is the
    table's, not its rows'); the reference level (`checks.labelled_level`) and the verdict
    (`checks.performance_drop`) are `check_performance`'s."""
    judged = ledger.judged(MIN_LABELS) if check is not None else None
    ledger.judged_start = None if judged is None else judged[0]
    if check is None or judged is None:
        return check_performance(
            reference, dataclasses.replace(view, labelled=[]), check, reference_labelled=()
        )
    start, tally = judged
    metric = check.metric
    level = labelled_level(reference, metric, reference_labelled)
    current = safe_metric(lambda: cells_metric(metric, tally.cells))
    by_revision = {
        rev: sum(t.cells.values())
        for (s, rev), t in ledger.tallies.items()
        if s == start and rev is not None
    }
    revision = max(sorted(by_revision), key=by_revision.__getitem__) if by_revision else None
    mostly = f" (mostly revision {revision})" if revision else ""
    evidence = performance_drop(
        check,
        level=level,
        current=current,
        estimated=False,
        rows=sum(tally.cells.values()),
        over=f" of predictions made {iso(start)} to {iso(start + ledger.bucket)}{mostly}",
    )
    return [dataclasses.replace(ev, model_revision=revision) for ev in evidence]


def _coverage(t: Tally, metric: str) -> dict[str, Any]:
    scored = sum(t.cells.values())
    value = cells_metric(metric, t.cells) if scored else math.nan
    return {
        "predicted": t.predicted,
        "labelled": t.labelled,
        "coverage": round(t.labelled / t.predicted, 4) if t.predicted else None,
        "value": None if math.isnan(value) else round(value, 4),
    }


def _canonical(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
