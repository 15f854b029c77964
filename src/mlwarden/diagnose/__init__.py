"""Diagnosis: where a fault most likely came from, as pure functions over a snapshot.

    snapshot.py  `Snapshot`: the ObservedModel, its namespace's raw objects keyed by
                 (kind, name), the active alerts and `now`; `needed_kinds()` tells the operator
                 which kinds to list. Helpers to read raw objects and Kubernetes timestamps.
    graph.py     the resource graph: the target Deployment, `spec.pipeline` components,
                 workloads annotated `mlwarden.io/produces`, mounted ConfigMaps and Secrets,
                 with lineage (what each node produces, what it depends on).
    timeline.py  each node's changes: rollouts and what changed between revisions, Job
                 failures and runs, missed schedules, config edits, crash loops, restarts.
    rank.py      the score of each suspect (lineage × time × kind, documented there), its
                 evidence in words, and the `Diagnosis` written to `status.diagnosis`.

No module here does I/O or reads a clock: the operator collects a `Snapshot`, calls
`diagnose`, and writes `Diagnosis.to_status()` and an Event with `Diagnosis.summary`.
"""

from mlwarden.diagnose.rank import Diagnosis, Suspect, diagnose
from mlwarden.diagnose.snapshot import Snapshot, needed_kinds

__all__ = ["Diagnosis", "Snapshot", "Suspect", "diagnose", "needed_kinds"]
