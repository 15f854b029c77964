"""The I/O of action retrain: start the Job or Workflow of a Running record, then follow it.

`advance` is called by the respond pass (respond.py) for each retrain record that is
Running, on every pass while it is (the handlers' timer runs a pass every
MLWARDEN_RESPOND_INTERVAL while a reaction is open, alerts or not). It returns the record as
it should be recorded now; the pass writes it when it changed.

- The record names no run yet (it was just recorded, or an operator stopped before it
  recorded the run): the run's name comes from the action id
  (`react.actuators.retrain.run_name`), so it is looked for first (one GET). Found and
  labelled with this action id: it was created before a restart, and is adopted. Found and
  not ours: Failed, nothing touched. Not found: the source is read (one GET of the CronJob,
  ConfigMap or WorkflowTemplate), the run built (pure) and created; a create answered 409
  (somebody created it meanwhile) reads it and adopts it when ours.
- The record names its run: a Job is read from the watch-backed cache (the operator watches
  Jobs for the diagnosis), with a GET only when the cache does not hold it (just created);
  a Workflow is not watched, and is read with one GET per pass. Gone before it ended:
  Failed, and never started again.

Known limit: a run created, then deleted (say `ttlSecondsAfterFinished: 0`) before the
status write that records it went through (an API error in between), is not recognised
after a restart and is started once more. Writing the record is the very next request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from mlwarden.kube import Conflict, Kube, KubeError, path
from mlwarden.react.actions import ActionRecord
from mlwarden.react.actuators import retrain
from mlwarden.spec import ObservedModel

log = logging.getLogger(__name__)


async def _read(api: Kube, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    found = await api.get(path(kind, namespace, name))
    return None if found is None else {"kind": kind, **found}


def _cached(jobs: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((j for j in jobs if (j.get("metadata") or {}).get("name") == name), None)


async def advance(
    api: Kube,
    model: ObservedModel,
    record: ActionRecord,
    *,
    alerts: Sequence[Mapping[str, Any]],
    reference_id: str | None,
    now: datetime,
    jobs: Sequence[Mapping[str, Any]] = (),
    incidents: Sequence[Mapping[str, Any]] = (),
) -> ActionRecord:
    """A Running retrain record, its run started or looked at: Running, Succeeded or Failed.

    `jobs`: the cached Jobs of the model's namespace. API errors propagate (the pass ends,
    and the next one starts again from what is recorded, which is safe: the run's name is
    fixed), except a create the API refused (4xx), which fails the record with its answer.
    """
    kind = retrain.run_kind(record)
    ref = retrain.run_ref(record)
    name = ref.partition("/")[2]
    ns = model.namespace
    reactions = retrain.reactions_for(model, record)
    spec = reactions[0].retrain if reactions else None
    timeout = spec.timeout_seconds if spec is not None else retrain.DEFAULT_TIMEOUT_SECONDS
    if record.run:
        found = _cached(jobs, name) if kind == "Job" else None
        if found is None:
            found = await _read(api, kind, ns, name)
        return retrain.follow(record, found, now=now, timeout_seconds=timeout)

    existing = await _read(api, kind, ns, name)
    if existing is not None:
        adopted = retrain.follow(record, existing, now=now, timeout_seconds=timeout)
        if adopted.run:
            log.info("%s: %s was created before an operator restart; following it", record.id, ref)
        return adopted

    if spec is None:
        return record.settle(
            "Failed", f"no retrain reaction names {record.target} any more; {ref} not started"
        )
    source_kind, source_name = spec.source
    source = await _read(api, source_kind, ns, source_name)
    if source is None:
        return record.settle("Failed", f"{source_kind} {ns}/{source_name} not found")
    incident = retrain.incident_for(
        model=model, record=record, alerts=alerts, reference_id=reference_id, incidents=incidents
    )
    try:
        run = retrain.build_run(
            retrain=spec,
            source=source,
            name=name,
            model=model,
            record_id=record.id,
            incident=incident,
        )
    except retrain.RetrainError as exc:
        return record.settle("Failed", f"{ref} not started: {exc}")
    try:
        await api.create(run)
    except Conflict:
        found = await _read(api, kind, ns, name)
        return retrain.follow(record, found, now=now, timeout_seconds=timeout)
    except KubeError as exc:
        if exc.status >= 500 or exc.status == 429:
            raise  # may or may not have landed: the next pass looks for it, then tries again
        hint = ""
        if exc.status == 404 and kind == "Workflow":
            hint = " (are Argo Workflows' CRDs installed?)"
        return record.settle("Failed", f"creating {ref}: {exc}{hint}")
    log.info("%s: started %s from %s", record.id, ref, record.target)
    return replace(record, run=ref, message=f"started {ref} from {record.target}")
