"""Simulated traffic of two model revisions for the canary tests and the benchmark.

A classifier of three classes with probabilities; a "bad" revision answers with a shifted class
distribution (its probabilities shift with it), and may be slower or fail more often.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlwarden.detector.ingest import Batch, parse_batch
from mlwarden.spec import ObservedModel, parse_observed_model

CLASSES = ("setosa", "versicolor", "virginica")
GOOD = (0.34, 0.33, 0.33)


def spec(**override: Any) -> dict[str, Any]:
    """The ObservedModel's spec for this traffic (overrides replace whole sections)."""
    base: dict[str, Any] = {
        "target": {"deployment": "m"},
        "features": [{"name": "x", "type": "numeric"}, {"name": "k", "type": "categorical"}],
        "prediction": {"name": "label", "type": "categorical", "probabilities": "proba"},
        "reference": {"size": 1000},
        "window": {"size": 1000},
        "alerting": {"fireAfter": 3, "resolveAfter": 3},
    }
    base.update(override)
    return base


def model(**override: Any) -> ObservedModel:
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "m"},
            "spec": spec(**override),
        }
    )


@dataclass
class Behaviour:
    classes: tuple[float, float, float] = GOOD
    confidence: float = 0.8  # probability of the predicted class
    latency: float = 0.010  # median seconds (lognormal, sigma 0.3)
    error_rate: float = 0.0
    missing_rate: float = 0.0  # answers without a prediction
    x_shift: float = 0.0  # the input distribution (shared traffic: the same for both)


def batch(
    rng: np.random.Generator,
    n: int,
    behaviour: Behaviour,
    *,
    revision: str | None,
    now: float,
    x_shift: float = 0.0,
    prefix: str = "r",
) -> Batch:
    """`n` requests answered by a revision behaving so, as the detector's parsed batch."""
    body = payload(rng, n, behaviour, revision=revision, now=now, x_shift=x_shift, prefix=prefix)
    return parse_batch(body, now=now)


def payload(
    rng: np.random.Generator,
    n: int,
    behaviour: Behaviour,
    *,
    revision: str | None,
    now: float,
    x_shift: float = 0.0,
    prefix: str = "r",
) -> dict[str, Any]:
    """The same as the body of `POST /v1/records` (the records format)."""
    label = rng.choice(len(CLASSES), size=n, p=np.asarray(behaviour.classes))
    conf = np.clip(rng.normal(behaviour.confidence, 0.05, size=n), 0.34, 0.99)
    x = rng.normal(x_shift, 1.0, size=n)
    k = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    status = np.where(rng.random(n) < behaviour.error_rate, 500, 200)
    latency = behaviour.latency * np.exp(rng.normal(0.0, 0.3, size=n))
    missing = rng.random(n) < behaviour.missing_rate
    records = []
    requests = []
    for i in range(n):
        rid = f"{prefix}-{now:.3f}-{i}"
        requests.append(
            {"id": rid, "ts": now, "status": int(status[i]), "latencySeconds": float(latency[i])}
        )
        if status[i] >= 500:
            continue
        other = (1.0 - conf[i]) / 2
        proba = [other, other, other]
        proba[int(label[i])] = float(conf[i])
        outputs: dict[str, Any] = {f"proba_{j}": proba[j] for j in range(3)}
        outputs["label"] = None if missing[i] else CLASSES[int(label[i])]
        records.append(
            {
                "id": rid,
                "row": 0,
                "ts": now,
                "features": {"x": float(x[i]), "k": str(k[i])},
                "outputs": outputs,
            }
        )
    source: dict[str, Any] = {"pod": "p"}
    if revision is not None:
        source["modelRevision"] = revision
    return {"source": source, "requests": requests, "records": records}
