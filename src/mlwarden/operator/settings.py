"""What the operator needs to know that is not in an ObservedModel: images, ports, resources.

Every setting comes from an MLWARDEN_* environment variable (the Helm chart sets
them) with the default below. The names of the objects the operator creates (public
contracts, docs/architecture.md) are in `mlwarden.names`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from mlwarden import __version__


def _resources(env: Mapping[str, str], prefix: str, defaults: dict[str, str]) -> dict[str, Any]:
    req = {
        "cpu": env.get(f"{prefix}_CPU_REQUEST", defaults["cpu_request"]),
        "memory": env.get(f"{prefix}_MEMORY_REQUEST", defaults["memory_request"]),
    }
    lim = {"memory": env.get(f"{prefix}_MEMORY_LIMIT", defaults["memory_limit"])}
    cpu_limit = env.get(f"{prefix}_CPU_LIMIT", defaults.get("cpu_limit", ""))
    if cpu_limit:
        lim["cpu"] = cpu_limit
    return {"requests": req, "limits": lim}


def sidecar_image_for(image: str) -> str:
    """The slim sidecar image published beside `image`: `REPO-sidecar` with the same tag
    (`mlwarden/mlwarden:0.1.0` -> `mlwarden/mlwarden-sidecar:0.1.0`). A digest names one
    image only, so an image given by digest is used for the sidecar as it is."""
    if "@" in image:
        return image
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return f"{image[:colon]}-sidecar{image[colon:]}"
    return f"{image}-sidecar"


@dataclass(frozen=True)
class OperatorSettings:
    image: str = f"mlwarden/mlwarden:{__version__}"
    # The injected sidecar's image: the Dockerfile's slim `sidecar` target (no numpy, scipy,
    # pyarrow, matplotlib, kopf or kubernetes). MLWARDEN_SIDECAR_IMAGE; unset, derived from
    # the image above (`sidecar_image_for`).
    sidecar_image: str = f"mlwarden/mlwarden-sidecar:{__version__}"
    image_pull_policy: str = "IfNotPresent"
    # The sidecar's ports inside the model pod: chosen away from common model ports and from
    # the range Istio's proxy uses (ISTIO_PORTS; 15090 is Envoy's Prometheus port).
    sidecar_port: int = 18080
    sidecar_admin_port: int = 18090
    # Termination of an injected pod: the sidecar's preStop sleep (0: no hook, for clusters
    # before Kubernetes 1.30, where the sleep action is off), then its drain on SIGTERM.
    sidecar_prestop_seconds: int = 5
    sidecar_drain_seconds: int = 5
    detector_port: int = 8080
    sidecar_resources: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "256Mi"},
        }
    )
    detector_resources: dict[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        }
    )
    # "patch": the operator patches the target Deployment; "webhook": a mutating
    # admission webhook injects at admission and the operator only repoints the Service.
    injection: str = "patch"
    # A NetworkPolicy per detector (MLWARDEN_NETWORK_POLICY=true), admitting the target's pods
    # and these NetworkPolicyPeers (MLWARDEN_NETWORK_POLICY_METRICS_FROM, a JSON list): the
    # Prometheus that scrapes the detectors.
    network_policy: bool = False
    network_policy_metrics_from: tuple[dict[str, Any], ...] = ()
    # Secrets to pull the detector's and the sidecar's image (MLWARDEN_IMAGE_PULL_SECRETS,
    # names separated by commas): the detector's pod gets them, and the injection adds those
    # missing to the model's pod template (and removes exactly those on undo).
    image_pull_secrets: tuple[str, ...] = ()
    # Incidents (react/incidents.py, operator/incidents.py): Alertmanager's URLs (every replica,
    # MLWARDEN_ALERTMANAGER_URL, comma-separated; `--alertmanager-url` sets it), how often a
    # firing incident is sent again (MLWARDEN_ALERTMANAGER_RESEND_SECONDS), how long a new
    # incident waits before its webhook notification so that the models that share its cause
    # join one fleet message (MLWARDEN_NOTIFY_WAIT_SECONDS, like Alertmanager's group_wait), and
    # the span within which incidents of one suspect form a fleet (MLWARDEN_FLEET_SPAN_SECONDS).
    alertmanager_urls: tuple[str, ...] = ()
    alertmanager_resend_seconds: int = 60
    notify_wait_seconds: int = 30
    fleet_span_seconds: int = 1800

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        d = cls()
        injection = env.get("MLWARDEN_INJECTION", d.injection)
        if injection not in ("patch", "webhook"):
            raise ValueError(f"MLWARDEN_INJECTION: must be patch or webhook, got {injection!r}")
        sidecar_port = _port(env, "MLWARDEN_SIDECAR_PORT", d.sidecar_port)
        admin_port = _port(env, "MLWARDEN_SIDECAR_ADMIN_PORT", d.sidecar_admin_port)
        if sidecar_port == admin_port:
            raise ValueError(
                f"MLWARDEN_SIDECAR_PORT and MLWARDEN_SIDECAR_ADMIN_PORT are both {sidecar_port}; "
                "the sidecar needs two ports"
            )
        return cls(
            image=env.get("MLWARDEN_IMAGE", d.image),
            sidecar_image=env.get("MLWARDEN_SIDECAR_IMAGE")
            or sidecar_image_for(env.get("MLWARDEN_IMAGE", d.image)),
            image_pull_policy=env.get("MLWARDEN_IMAGE_PULL_POLICY", d.image_pull_policy),
            sidecar_port=sidecar_port,
            sidecar_admin_port=admin_port,
            sidecar_prestop_seconds=_seconds(
                env, "MLWARDEN_SIDECAR_PRESTOP_SECONDS", d.sidecar_prestop_seconds
            ),
            sidecar_drain_seconds=_seconds(
                env, "MLWARDEN_SIDECAR_DRAIN_SECONDS", d.sidecar_drain_seconds
            ),
            detector_port=_port(env, "MLWARDEN_DETECTOR_PORT", d.detector_port),
            sidecar_resources=_resources(
                env,
                "MLWARDEN_SIDECAR",
                {"cpu_request": "50m", "memory_request": "64Mi", "memory_limit": "256Mi"},
            ),
            detector_resources=_resources(
                env,
                "MLWARDEN_DETECTOR",
                {"cpu_request": "100m", "memory_request": "128Mi", "memory_limit": "512Mi"},
            ),
            injection=injection,
            network_policy=_flag(env, "MLWARDEN_NETWORK_POLICY", d.network_policy),
            network_policy_metrics_from=_peers(env, "MLWARDEN_NETWORK_POLICY_METRICS_FROM"),
            image_pull_secrets=_names(env, "MLWARDEN_IMAGE_PULL_SECRETS"),
            alertmanager_urls=_urls(env, "MLWARDEN_ALERTMANAGER_URL"),
            alertmanager_resend_seconds=_seconds(
                env, "MLWARDEN_ALERTMANAGER_RESEND_SECONDS", d.alertmanager_resend_seconds
            ),
            notify_wait_seconds=_seconds(
                env, "MLWARDEN_NOTIFY_WAIT_SECONDS", d.notify_wait_seconds
            ),
            fleet_span_seconds=_seconds(env, "MLWARDEN_FLEET_SPAN_SECONDS", d.fleet_span_seconds),
        )


def _seconds(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise ValueError(f"{name}: must be a whole number of seconds (0 or more), got {text!r}")
    return int(text)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(f"{name}: must be a port number (1-65535), got {text!r}")
    return port


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Object names separated by commas (or spaces), in order, each once."""
    out: list[str] = []
    for item in env.get(name, "").replace(",", " ").split():
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", item) or len(item) > 253:
            raise ValueError(f"{name}: {item!r} is not a Secret name")
        if item not in out:
            out.append(item)
    return tuple(out)


def _urls(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """http(s) URLs separated by commas (or spaces), in order, each once."""
    out: list[str] = []
    for item in env.get(name, "").replace(",", " ").split():
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{name}: {item!r} is not an http(s) URL, e.g. "
                "http://alertmanager-operated.monitoring.svc:9093"
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if value == "":
        return default
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{name}: must be true or false, got {value!r}")
    return value in ("true", "1")


def _peers(env: Mapping[str, str], name: str) -> tuple[dict[str, Any], ...]:
    text = env.get(name, "").strip()
    if not text:
        return ()
    try:
        peers = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name}: not JSON: {exc}") from None
    if not isinstance(peers, list) or not all(isinstance(p, dict) for p in peers):
        raise ValueError(
            f"{name}: must be a JSON list of NetworkPolicyPeers, e.g. "
            '[{"namespaceSelector": {"matchLabels": '
            '{"kubernetes.io/metadata.name": "monitoring"}}}]'
        )
    return tuple(peers)


# The security context every container the operator creates runs with. No runAsUser: the
# image's USER is numeric (10001), so runAsNonRoot holds without one, and OpenShift's
# restricted-v2 SCC assigns a uid from the namespace's range, which a fixed uid would break.
RESTRICTED_SECURITY_CONTEXT: Final[dict[str, Any]] = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
IMAGE_UID: Final = 10001  # the image's numeric USER (Dockerfile)

# Ports Istio's proxy (Envoy and pilot-agent) uses inside a pod: 15000 admin, 15001 outbound,
# 15004 debug, 15006 inbound, 15008/15009 HBONE, 15020 merged metrics, 15021 health, 15053 DNS,
# 15090 Envoy's Prometheus telemetry. The whole range is kept clear.
ISTIO_PORTS: Final = range(15000, 15091)
