"""The operator keeps working when its token is rotated and the old one expires.

The kubeconfig names a `tokenFile` written as the kubelet writes a projected service-account
token (an atomic symlink swap); kopf's login reads it through the kubernetes client exactly as
it reads /var/run/secrets/kubernetes.io/serviceaccount/token in a pod. The emulator refuses
the rotated-away token with 401 (emulate_tokens.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster import (
    NS,
    TOKEN,
    Cluster,
    api_call,
    eventually,
    obj,
    status,
)
from emulate_tokens import project_token

ROTATED = "test-token-rotated"


def token_file_kubeconfig(tmp_path: Path, server: str, token_file: Path) -> Path:
    path = tmp_path / "kubeconfig-token-file"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n"
        f"clusters: [{{name: test, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: test, user: {{tokenFile: '{token_file}'}}}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test, namespace: test}}]\n"
    )
    return path


async def test_the_operator_keeps_working_after_its_token_rotates(
    cluster: tuple[Cluster, str],
    warming_up: Callable[..., Any],
    tmp_path: Path,
) -> None:
    api, server = cluster
    token = project_token(tmp_path / "serviceaccount", TOKEN)
    op = await warming_up(env={"KUBECONFIG": str(token_file_kubeconfig(tmp_path, server, token))})

    # The kubelet writes a new token; the old one expires and is refused from now on.
    project_token(tmp_path / "serviceaccount", ROTATED)
    api.rotate_token(TOKEN, ROTATED)
    # A spec change: the reconcile reads and patches through mlwarden's client, kopf writes
    # the status through its own; both must log in again with the new token.
    await api_call(
        server, "PATCH", f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/fraud",
        {"spec": {"alerting": {"evaluationInterval": "10s"}}}, "application/merge-patch+json",
    )  # fmt: skip
    try:
        await eventually(
            lambda: status(api).get("observedGeneration") == 2,
            timeout=30,
            what="the spec change reconciled after the rotation",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{op.log()[-3000:]}") from None
    manifest = obj(api, "v1/configmaps", "fraud-detector")["data"]
    assert any("10s" in text for text in manifest.values())
    refused = {method for t, method, _ in api.refused if t == TOKEN}
    assert refused, "the old token was never presented after it expired: nothing was tested"
    assert not [r for r in api.refused if r[0] == ROTATED]
    assert "Unauthorized" not in op.log()
    assert await op.stop() == 0, op.log()[-3000:]
