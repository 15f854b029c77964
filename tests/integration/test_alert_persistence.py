"""A detector killed mid-incident and restarted reports the same alert, with the same `since`.

The real detector process, reporting to kmock's API emulator and storing its reference and
alert state in ConfigMap `m-reference` (as in test_reference_persistence.py). It is SIGKILLed
(an OOM kill or an eviction gives no chance to save anything) while a FeatureDrift alert is
active, and restarted. The operator derives an incident from the alert's type, feature and
`since`; a new `since` would be a new incident, in which its once-per-incident guardrail
allows another rollback, to an even older revision.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import kmock
import numpy as np
from harness import detector_process, emulate_observed_model, get_status, post_records, until

from mlwarden.react import guardrails
from mlwarden.react.actions import ActionRecord, action_id
from mlwarden.timestamps import format_time, parse_time

RESOURCE = "mlwarden.io/v1alpha1/observedmodels"
CONFIGMAPS = "v1/configmaps"
UID = "5e1f0a4c-0000-4000-8000-000000000002"
ALERTS_KEY = "alerts.json"  # in ConfigMap NAME-reference, next to the reference
MANIFEST = """\
apiVersion: mlwarden.io/v1alpha1
kind: ObservedModel
metadata: {name: m, namespace: test}
spec:
  target: {deployment: m}
  features:
    - {name: a, type: numeric}
    - {name: b, type: numeric}
  reference: {source: warmup, size: 300}
  window: {size: 300}
  alerting: {evaluationInterval: 200ms, fireAfter: 2, resolveAfter: 2}
"""


def records(rng: np.random.Generator, n: int, shift: float) -> dict[str, Any]:
    return {
        "records": [
            {"features": {"a": float(rng.normal()), "b": float(rng.normal(shift))}}
            for _ in range(n)
        ]
    }


async def test_a_killed_detector_reports_the_same_alert_after_a_restart(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    async with kmock.KubernetesEmulator() as api, kmock.Server(api) as server:
        emulate_observed_model(api, UID)

        def om_status() -> dict[str, Any]:
            return dict(api.objects[RESOURCE, "test", "m"].get("status") or {})

        def drift() -> list[dict[str, Any]]:
            return [a for a in om_status().get("alerts") or [] if a["type"] == "FeatureDrift"]

        # 1. Warm up, then drift: the alert fires and is reported; then SIGKILL.
        async with detector_process(manifest, "--report-to", str(server.url), killed_ok=True) as (
            url,
            proc,
        ):
            await post_records(url, records(rng, 300, 0.0))
            await until(
                lambda: (om_status().get("detector") or {}).get("reference", {}).get("storedIn"),
                "the reference stored",
            )
            await post_records(url, records(rng, 300, 2.0))
            before = await until(drift, "a FeatureDrift alert")
            local_before = (await get_status(url))["alerts"]
            proc.kill()
            await proc.wait()
        assert [(a["feature"], a["since"]) for a in before] == [
            (a["feature"], a["since"]) for a in local_before if a["type"] == "FeatureDrift"
        ]
        stored = api.objects[CONFIGMAPS, "test", "m-reference"].get("data") or {}

        # A rollback the operator took in this incident, a little after the onset.
        onset = parse_time(before[0]["since"])
        assert onset is not None
        rollback = ActionRecord(
            id=action_id(
                model_uid=UID,
                alert_key=f"FeatureDrift/{before[0]['feature']}",
                onset=before[0]["since"],
                action="rollback",
                target="Deployment/m",
                from_state="7",
                to_state="6",
            ),
            action="rollback",
            target="Deployment/m",
            from_state="7",
            to_state="6",
            reason="FeatureDrift/b",
            result="Succeeded",
            at=format_time(onset + timedelta(seconds=1)),
        )

        # 2. Restarted (the same reference is reloaded): the same alert, the same `since`,
        #    before any new record; drifted traffic goes on and the onset stays.
        async with detector_process(manifest, "--report-to", str(server.url), killed_ok=True) as (
            url,
            _,
        ):
            first = await get_status(url)
            assert [(a["type"], a.get("feature"), a["since"]) for a in first["alerts"]] == [
                (a["type"], a.get("feature"), a["since"]) for a in local_before
            ], first
            await post_records(url, records(rng, 300, 2.0))
            await until(
                lambda: (
                    (om_status().get("detector") or {}).get("reference", {}).get("origin")
                    == "restored"
                ),
                "the restarted detector's status write",
            )
            status_after = await get_status(url)
            after = drift()
        assert [(a["feature"], a["since"]) for a in after] == [
            (a["feature"], a["since"]) for a in before
        ]
        # (Drift fires as records arrive, before the periodic data-quality checks: compare the
        # alerts that were active when the detector was killed.)
        kinds = {(a["type"], a.get("feature"), a["test"]) for a in local_before}
        assert [
            a["since"]
            for a in status_after["alerts"]
            if (a["type"], a.get("feature"), a["test"]) in kinds
        ] == [a["since"] for a in local_before]
        assert "restored the alert state" in om_status()["detector"]["reference"]["alertState"]
        # What the killed detector had stored: the onsets of its active alerts.
        tracks = json.loads(stored[ALERTS_KEY])["tracks"]
        assert {t["active"]["since"] for t in tracks if t["active"]} == {
            a["since"] for a in local_before
        }

    # 3. To the operator this is the incident it already acted in: the same action id, and
    #    the once-per-incident guardrail refuses a second rollback.
    again = action_id(
        model_uid=UID,
        alert_key=f"FeatureDrift/{after[0]['feature']}",
        onset=after[0]["since"],
        action="rollback",
        target="Deployment/m",
        from_state="7",
        to_state="6",
    )
    assert again == rollback.id
    refusal = guardrails.once_per_incident(
        action="rollback",
        objects=["Deployment/m"],
        onset=parse_time(after[0]["since"]),
        history=[rollback],
        dry_run=False,
    )
    assert refusal is not None and "in this incident already" in refusal
