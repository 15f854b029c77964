"""Embedding drift: what one check costs, at ingest and at evaluation, and what it decides.

The detector's embedding check (`detector/embedding.py`, issue 20) on 384-dimension vectors
(a sentence-embedding model's width), with reservoirs of 2,000 reference and 2,000 current
vectors (the default `CAPACITY`) and, for comparison, 1,000 each:

- ingest: projecting a batch of 500 vectors to 32 dimensions and assigning each to its
  topic (nearest reference centroid), per vector;
- evaluation: one `EmbeddingMonitor.evidence` (MMD with sequentially stopped permutations,
  and the topic mix's chi-square), on stationary vectors (the permutations stop early) and
  on drifted ones (every permutation is drawn: the worst case), CPU seconds of the process
  (`time.process_time`, all threads: numpy's BLAS may use both cores) and wall time;
- the kernel matrix's transient memory (pooled n x n float64);
- decisions: evaluations flagging anything on stationary vectors (false alarms) and on a
  mean shift of twice the effect floor's size, over `RUNS` independent seeds.

CPU time, not wall time, is the comparable figure on a shared machine; both are medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from mlwarden.detector.embedding import EmbeddingMonitor
from mlwarden.detector.ingest import parse_batch
from mlwarden.spec import parse_observed_model

NAME = "embedding_check"
DIM = 384
RUNS = 20
CAPACITIES = (2000, 1000)


def _spec(reference: int) -> Any:
    return parse_observed_model(
        {
            "apiVersion": "mlwarden.io/v1alpha1",
            "kind": "ObservedModel",
            "metadata": {"name": "bench"},
            "spec": {
                "target": {"deployment": "m"},
                "features": [{"name": "emb", "type": "embedding", "dimensions": DIM}],
                "reference": {"size": reference},
            },
        }
    ).spec


def _vectors(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    """Anisotropic Gaussian vectors around 8 topic centres; `shift` moves the mean by that
    fraction of the vectors' RMS spread around their mean."""
    centres = np.random.default_rng(42).normal(0, 1.0, size=(8, DIM))
    scales = np.random.default_rng(43).uniform(0.2, 2.0, DIM)
    out = centres[rng.integers(0, 8, size=n)] + rng.standard_normal((n, DIM)) * scales
    if shift:
        spread = np.sqrt(DIM * 1.0 + np.sum(scales**2))
        direction = np.random.default_rng(44).standard_normal(DIM)
        out += shift * spread * direction / np.linalg.norm(direction)
    result: np.ndarray = out
    return result


def _batch(vectors: np.ndarray) -> Any:
    records = [{"features": {}, "outputs": {"emb": v.tolist()}} for v in vectors]
    return parse_batch({"records": records}, now=0.0)


def _monitor(capacity: int, rng: np.random.Generator, shift: float) -> EmbeddingMonitor:
    spec = _spec(capacity)
    monitor = EmbeddingMonitor.from_spec(spec, capacity=capacity)
    assert monitor is not None
    monitor.ingest(_batch(_vectors(rng, capacity)))
    monitor.ingest(_batch(_vectors(rng, capacity, shift)))
    return monitor


def _evaluate(capacity: int, shift: float, seed: int) -> tuple[float, float, bool, int]:
    """(CPU s, wall s, flagged, permutations) of one evaluation."""
    monitor = _monitor(capacity, np.random.default_rng(seed), shift)
    check = _spec(capacity).detectors.drift
    cpu, wall = time.process_time(), time.perf_counter()
    evidence = monitor.evidence(check)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, any(e.failing for e in evidence), monitor.last_tests["emb"].permutations


def _ingest_us(capacity: int) -> float:
    """CPU microseconds per vector to decode, project and assign a batch of 500."""
    rng = np.random.default_rng(1)
    monitor = _monitor(capacity, rng, 0.0)
    batches = [_batch(_vectors(rng, 500)) for _ in range(10)]
    cpu = time.process_time()
    for b in batches:
        monitor.ingest(b)
    return (time.process_time() - cpu) / 5000 * 1e6


def run(*, duration: float = 4.0, repeats: int = 3, warmup: float = 2.0) -> dict[str, Any]:
    del duration, warmup
    started = time.monotonic()
    out: dict[str, Any] = {"capacities": {}}
    for capacity in CAPACITIES:
        stationary = [_evaluate(capacity, 0.0, 100 + s) for s in range(RUNS)]
        drifted = [_evaluate(capacity, 0.25, 200 + s) for s in range(RUNS)]
        out["capacities"][capacity] = {
            "ingest_us_per_vector": statistics.median(_ingest_us(capacity) for _ in range(repeats)),
            "stationary_cpu_s": statistics.median(r[0] for r in stationary),
            "stationary_wall_s": statistics.median(r[1] for r in stationary),
            "stationary_permutations": statistics.median(r[3] for r in stationary),
            "drifted_cpu_s": statistics.median(r[0] for r in drifted),
            "drifted_wall_s": statistics.median(r[1] for r in drifted),
            "drifted_permutations": statistics.median(r[3] for r in drifted),
            "false_alarms": sum(r[2] for r in stationary),
            "detected": sum(r[2] for r in drifted),
            "kernel_mb": (2 * capacity) ** 2 * 8 / 2**20,
        }
    out["seconds"] = time.monotonic() - started
    out["verdicts"] = [
        (
            f"no false alarm in {RUNS} stationary evaluations (pValue 0.01, Bonferroni)",
            all(c["false_alarms"] == 0 for c in out["capacities"].values()),
            ", ".join(f"{c['false_alarms']}" for c in out["capacities"].values()),
        ),
        (
            f"a mean shift of twice the floor's size flagged in all {RUNS} runs",
            all(c["detected"] == RUNS for c in out["capacities"].values()),
            ", ".join(f"{c['detected']}/{RUNS}" for c in out["capacities"].values()),
        ),
    ]
    out["text"] = render_markdown(out)
    return out


def render_markdown(res: dict[str, Any]) -> str:
    out = [
        "## Embedding check (`benchmarks/embedding_check.py`)",
        "",
        f"One `EmbeddingMonitor` evaluation (MMD on a 32-dimension projection with "
        f"sequentially stopped permutations, plus the topic mix's chi-square) on {DIM}-"
        f"dimension vectors (8 topics, anisotropic noise); medians of {RUNS} seeds. CPU = "
        f"`time.process_time` of the process (all threads), the figure to compare on a "
        f"shared machine. Drifted: the mean moved by 0.25 of the vectors' RMS spread (twice "
        f"the floor's 0.125): every permutation is drawn, the worst case.",
        "",
        "| vectors (reference + current) | ingest, CPU us/vector | evaluate stationary, CPU s "
        "(wall s; permutations) | evaluate drifted, CPU s (wall s; permutations) | kernel "
        "matrix (MB, transient) | false alarms | detected |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for capacity, c in res["capacities"].items():
        out.append(
            f"| {capacity:,} + {capacity:,} | {c['ingest_us_per_vector']:.1f} | "
            f"{c['stationary_cpu_s']:.3f} ({c['stationary_wall_s']:.3f}; "
            f"{c['stationary_permutations']:.0f}) | {c['drifted_cpu_s']:.3f} "
            f"({c['drifted_wall_s']:.3f}; {c['drifted_permutations']:.0f}) | "
            f"{c['kernel_mb']:.0f} | {c['false_alarms']}/{RUNS} | {c['detected']}/{RUNS} |"
        )
    out += ["", "| target | verdict | figure |", "|---|---|---|"]
    for name, ok, figure in res["verdicts"]:
        out.append(f"| {name} | {'PASS' if ok else 'MISS'} | {figure} |")
    out += [
        "",
        "Command: `.venv/bin/python benchmarks/run.py --only embedding_check` (or "
        "`.venv/bin/python benchmarks/embedding_check.py`). 1,000 + 1,000 is the detector's "
        "default (`detector/embedding.py` `CAPACITY`).",
    ]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    from procs import by_hand

    by_hand(__doc__, "embedding_check")
    print(render_markdown(run()))
