"""The detector keeps writing to the API after its projected token is rotated and the old expires.

The real detector process, reporting to kmock's API emulator taught token expiry
(tests/operator/emulate_tokens.py) with `--report-token-file`, the token file written as the
kubelet writes a projected service-account token (an atomic symlink swap). In a pod the
detector reads /var/run/secrets/kubernetes.io/serviceaccount/token through the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kmock
import numpy as np
from emulate_tokens import TokenRotation, project_token
from harness import detector_process, emulate_observed_model, post_records, until
from test_reference_persistence import CONFIGMAPS, RESOURCE, UID, records, write_manifest


class Api(TokenRotation, kmock.KubernetesEmulator):
    """kmock's emulator that refuses rotated-away tokens with 401."""


async def test_status_writes_and_the_reference_store_survive_a_token_rotation(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    token = project_token(tmp_path / "serviceaccount", "detector-1")
    async with Api() as api, kmock.Server(api) as server:
        emulate_observed_model(api, UID)

        def status() -> dict[str, Any]:
            return dict(api.objects[RESOURCE, "test", "m"].get("status") or {})

        report = ("--report-to", str(server.url), "--report-token-file", str(token))
        async with detector_process(write_manifest(tmp_path), *report) as (url, _):
            # The first evaluation writes status.detector with the first token.
            await until(lambda: status().get("detector"), "the first status write")
            # The kubelet writes a new token; the old one expires and is refused from now on.
            project_token(tmp_path / "serviceaccount", "detector-2")
            api.rotate_token("detector-1", "detector-2")

            # The reference store (the ConfigMap is created) and the status writes go on.
            await post_records(url, records(rng, 300, 0.0))
            reference = await until(
                lambda: (status().get("detector") or {}).get("reference", {}).get("storedIn"),
                "the reference stored after the rotation",
            )
            await post_records(url, records(rng, 300, 2.0))
            alerts = await until(
                lambda: [a for a in status().get("alerts") or [] if a["type"] == "FeatureDrift"],
                "a FeatureDrift alert written after the rotation",
            )
        assert reference == "ConfigMap test/m-reference"
        assert api.objects[CONFIGMAPS, "test", "m-reference"]["data"]["records"] == "300"
        assert [a["feature"] for a in alerts] == ["b"]
        assert {t for t, _, _ in api.refused} <= {"detector-1"}, api.refused
