"""Injected pods that start, and no restarts nobody asked for: the real operator, the emulator.

- an operator restarted with another image (and other sidecar defaults) does not patch the
  Deployments it injected; `sidecar.mlwarden.io/upgrade` upgrades them, one at a time;
- a Deployment with strategy Recreate is injected only once `mlwarden.io/approve` names it;
- a rollout with the sidecar that exceeds its progress deadline (emulate_progress.py) is
  undone, Service first, and the ObservedModel stays Failed, restarts included, until a
  person asks again (`sidecar.mlwarden.io/retry`);
- in a namespace Istio injects, the sidecar's admin port is excluded from Istio's capture,
  and an operator configured with a port Istio uses is refused with the setting to change.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from cluster import (
    DEPLOYMENTS,
    FAST,
    MERGE,
    NS,
    OM,
    OPERATOR_CALLS,
    SERVICES,
    Cluster,
    api_call,
    condition,
    events,
    eventually,
    exists,
    model_deployment,
    model_service,
    obj,
    observed_model,
    status,
)

NEXT_IMAGE = "mlwarden/mlwarden:next"
NEXT_SIDECAR_IMAGE = "mlwarden/mlwarden-sidecar:next"


def om_path(name: str) -> str:
    return f"/apis/mlwarden.io/v1alpha1/namespaces/{NS}/observedmodels/{name}"


async def annotate(server: str, name: str, key: str, value: str) -> None:
    await api_call(server, "PATCH", om_path(name),
                   {"metadata": {"annotations": {key: value}}}, MERGE)  # fmt: skip


def sidecar(api: Cluster, deployment: str) -> dict[str, Any] | None:
    template = obj(api, DEPLOYMENTS, deployment)["spec"]["template"]["spec"]
    found = [c for c in template["containers"] if c["name"] == "mlwarden-sidecar"]
    return dict(found[0]) if found else None


def ready_reason(api: Cluster) -> str | None:
    st = status(api)
    return condition(st, "Ready")["reason"] if st.get("conditions") else None


def deployment_patches(since: int, name: str) -> int:
    return sum(
        1
        for c in OPERATOR_CALLS[since:]
        if (c.verb, c.resource, c.name) == ("patch", "deployments", name)
    )


async def test_a_restarted_operator_leaves_injected_models_alone_until_an_upgrade_is_asked(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    api.instant_rollouts = False
    seed(api, model_deployment("fraud-model"), model_service("fraud-model"), observed_model(),
         model_deployment("iris-model"), model_service("iris-model"),
         observed_model("iris", target="iris-model"))  # fmt: skip
    op = await start_operator(env=FAST)
    await eventually(lambda: sidecar(api, "fraud-model") and sidecar(api, "iris-model"),
                     what="both injected")  # fmt: skip
    api.finish_rollouts()
    await eventually(lambda: status(api)["phase"] == status(api, "iris")["phase"] == "WarmingUp",
                     what="both WarmingUp")  # fmt: skip
    assert await op.stop() == 0
    versions = {n: obj(api, DEPLOYMENTS, n)["metadata"]["resourceVersion"]
                for n in ("fraud-model", "iris-model")}  # fmt: skip

    # The upgraded operator: another image, another CPU request, another admin port.
    upgraded = {**FAST, "MLWARDEN_IMAGE": NEXT_IMAGE, "MLWARDEN_SIDECAR_CPU_REQUEST": "80m",
                "MLWARDEN_SIDECAR_ADMIN_PORT": "18091"}  # fmt: skip
    before = len(OPERATOR_CALLS)
    op = await start_operator(env=upgraded)
    await eventually(
        lambda: (
            op.log().count("Resuming is processed") >= 2
            or deployment_patches(before, "fraud-model") + deployment_patches(before, "iris-model")
        ),
        what="both resumed",
    )
    await asyncio.sleep(1.5)  # three retry periods: any re-patch would have happened
    for name in ("fraud-model", "iris-model"):
        assert deployment_patches(before, name) == 0, op.log()[-3000:]
        assert obj(api, DEPLOYMENTS, name)["metadata"]["resourceVersion"] == versions[name]
        # The slim sidecar image beside MLWARDEN_IMAGE (settings.sidecar_image_for).
        assert sidecar(api, name)["image"] == "mlwarden/mlwarden-sidecar:test"  # type: ignore[index]

    # Asked for both: one upgrade rollout at a time.
    await annotate(server, "fraud", "sidecar.mlwarden.io/upgrade", "2026-12-01")
    await annotate(server, "iris", "sidecar.mlwarden.io/upgrade", "2026-12-01")

    def upgraded_now() -> list[str]:
        return [n for n in ("fraud-model", "iris-model")
                if sidecar(api, n)["image"] == NEXT_SIDECAR_IMAGE]  # type: ignore[index]  # fmt: skip

    first = (await eventually(upgraded_now, what="one sidecar upgraded"))[0]
    await asyncio.sleep(1.5)
    assert upgraded_now() == [first], "the second upgrade did not wait for the first rollout"
    other = "iris" if first == "fraud-model" else "fraud"
    assert "waits for the upgrade of ObservedModel test/" in op.log()
    api.finish_rollouts()
    await eventually(lambda: len(upgraded_now()) == 2, what="the second upgrade")
    api.finish_rollouts()
    await eventually(lambda: status(api, other)["phase"] == "WarmingUp", what="settled")
    upgraded_sidecar = sidecar(api, first)
    assert upgraded_sidecar is not None
    assert upgraded_sidecar["resources"]["requests"]["cpu"] == "80m"
    assert {"name": "mlwarden-admin", "containerPort": 18091}.items() <= (
        upgraded_sidecar["ports"][1].items()
    )
    # The Service still routes by name: both pods' traffic reaches the new sidecar port.
    assert obj(api, SERVICES, first)["spec"]["ports"][0]["targetPort"] == "http"


async def test_a_recreate_deployment_waits_for_approval(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    deployment = model_deployment()
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    seed(api, deployment, model_service(), observed_model())
    await start_operator(env=FAST)
    await eventually(lambda: ready_reason(api) == "AwaitingApproval", what="awaiting approval")
    command = "kubectl annotate om fraud -n test mlwarden.io/approve=inject-fraud-model --overwrite"
    st = status(api)
    assert st["phase"] == "Pending" and command in st["message"]
    # kopf posts Events from a queue of its own: the Event may land after the status patch.
    (asked,) = await eventually(
        lambda: [e for e in events(api) if e.get("reason") == "ApprovalRequired"],
        what="the ApprovalRequired Event",
    )
    assert command in asked["message"] and "strategy Recreate" in asked["message"]
    await asyncio.sleep(1.0)
    assert sidecar(api, "fraud-model") is None  # not a single pod stopped meanwhile

    await annotate(server, "fraud", "mlwarden.io/approve", "inject-fraud-model")
    await eventually(lambda: status(api).get("phase") == "WarmingUp", what="injected")
    assert sidecar(api, "fraud-model") is not None
    assert [e for e in events(api) if e.get("reason") == "ApprovalRequired"] == [asked]


async def test_a_stalled_rollout_is_undone_and_stays_failed_until_asked_again(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    api.unready_containers = frozenset({"mlwarden-sidecar"})  # its image cannot be pulled, say
    original = model_deployment(port_name=None)
    seed(api, original, model_service(target=8080), observed_model())
    before = len(OPERATOR_CALLS)
    op = await start_operator(env=FAST)
    await eventually(lambda: status(api).get("phase") == "Failed", what="Failed")
    st = status(api)
    ready = condition(st, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "RolloutStalled")
    assert "ProgressDeadlineExceeded" in st["message"] and "undone" in st["message"]
    assert "sidecar.mlwarden.io/retry" in st["message"]
    assert "RolloutStalled" in [e.get("reason") for e in events(api)]
    assert sidecar(api, "fraud-model") is None
    assert obj(api, SERVICES, "fraud-model")["spec"]["ports"][0]["targetPort"] == 8080
    template = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]
    assert template == original["spec"]["template"]
    assert "mlwarden.io/injected" not in obj(api, DEPLOYMENTS, "fraud-model")["metadata"].get(
        "annotations", {}
    )
    await asyncio.sleep(2.0)  # four retry periods: no loop of injections
    assert deployment_patches(before, "fraud-model") == 2  # the injection, its undo
    assert await op.stop() == 0

    op = await start_operator(env=FAST)  # a restart does not try again either
    await eventually(lambda: "Resuming is processed" in op.log(), what="resumed")
    await asyncio.sleep(1.0)
    assert deployment_patches(before, "fraud-model") == 2
    assert status(api)["phase"] == "Failed"

    api.unready_containers = frozenset()  # fixed (the pull secret added, say)
    await annotate(server, "fraud", "sidecar.mlwarden.io/retry", "1")
    await eventually(lambda: status(api).get("phase") == "WarmingUp", what="injected again")
    assert sidecar(api, "fraud-model") is not None


async def test_an_istio_namespace_and_pull_secrets_are_adapted_to_and_undone_exactly(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, server = cluster
    namespace = api.objects["v1/namespaces", None, NS]
    namespace["metadata"] = {**namespace["metadata"], "labels": {"istio-injection": "enabled"}}
    original = model_deployment()
    seed(api, original, model_service(), observed_model())
    await start_operator(env={**FAST, "MLWARDEN_IMAGE_PULL_SECRETS": "regcred"})
    await eventually(lambda: status(api).get("phase") == "WarmingUp", what="injected")
    template = obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"]
    excluded = template["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"]
    assert excluded == "18090"
    assert template["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    detector = obj(api, DEPLOYMENTS, "fraud-detector")["spec"]["template"]["spec"]
    assert detector["imagePullSecrets"] == [{"name": "regcred"}]
    assert "runAsUser" not in sidecar(api, "fraud-model")["securityContext"]  # type: ignore[index]

    await api_call(server, "DELETE", om_path("fraud"))
    await eventually(lambda: not exists(api, OM, "fraud"), what="finalizer released")
    after = json.loads(json.dumps(obj(api, DEPLOYMENTS, "fraud-model")["spec"]["template"],
                                  default=dict))  # fmt: skip
    if after["metadata"].get("annotations") == {}:
        del after["metadata"]["annotations"]  # an empty map is not stored (omitempty)
    assert after == original["spec"]["template"]


async def test_an_istio_port_is_refused_where_istio_injects(
    cluster: tuple[Cluster, str], start_operator: Callable[..., Any], seed: Callable[..., None]
) -> None:
    api, _ = cluster
    deployment = model_deployment()
    deployment["spec"]["template"]["metadata"]["annotations"] = {"sidecar.istio.io/inject": "true"}
    seed(api, deployment, model_service(), observed_model())
    await start_operator(env={**FAST, "MLWARDEN_SIDECAR_ADMIN_PORT": "15090"})
    await eventually(lambda: status(api).get("phase") == "Failed", what="Failed")
    message = status(api)["message"]
    assert "Istio" in message and "[15090]" in message and "MLWARDEN_SIDECAR_ADMIN_PORT" in message
    assert sidecar(api, "fraud-model") is None
    assert obj(api, OM, "fraud")  # still there, waiting for a fix
