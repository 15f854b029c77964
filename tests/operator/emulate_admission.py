"""Mutating admission, as the API server does it, for the operator tests (webhook mode).

`MutatingAdmission` is a mixin of the test cluster (`cluster.Cluster`). While a
MutatingWebhookConfiguration (admissionregistration.k8s.io/v1) is stored in the emulator, every
CREATE and UPDATE of an object its rules match is sent to the webhook, as the API server sends
it, before the object is stored:

- matching: `rules` (apiGroups, apiVersions, resources, operations; "*" too), the
  `namespaceSelector` against the namespace's labels, which always include
  `kubernetes.io/metadata.name` (the API server sets it on every namespace), and the
  `objectSelector` against the object's labels (on UPDATE, the old or the new object's);
- the call: an AdmissionReview v1 POSTed over HTTPS to `clientConfig.url`, or to
  `clientConfig.service` (routed by `service_routes`, as kube-proxy routes the Service to the
  operator pod), verifying the server's certificate against `clientConfig.caBundle` for the
  host name `<service>.<namespace>.svc`, as the API server does; `timeoutSeconds` (default 10)
  bounds the call;
- the answer: a base64 JSONPatch is applied to the object; `allowed: false` refuses the
  request with the webhook's status; a webhook that fails (connection, TLS, timeout, a non-200
  answer) refuses the request under `failurePolicy: Fail` and is skipped under `Ignore`.

Not imitated: reinvocation, dry-run, validating webhooks, v1beta1 reviews, conversion of
other API versions (matchPolicy). Nothing changes for tests that store no webhook configuration.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
from kmock import ResourceInfo
from kmock._internal import enums

from mlwarden.demo.cluster import ApiServerEmulator
from mlwarden.patches import apply_merge_patch, merge_patch_diff

MUTATING_WEBHOOKS = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


def declare_admission(cluster: ApiServerEmulator) -> None:
    """Serve MutatingWebhookConfigurations (cluster-scoped), as every API server does."""
    cluster.resources[MUTATING_WEBHOOKS] = ResourceInfo(
        kind="MutatingWebhookConfiguration", singular="mutatingwebhookconfiguration",
        namespaced=False, verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )  # fmt: skip


@dataclass(frozen=True)
class AdmissionCall:
    """One call of a webhook by the emulated API server, and what came of it."""

    webhook: str
    operation: str
    namespace: str
    name: str
    outcome: str  # "patched", "unchanged", "refused", "failed: ... (ignored)", "failed: ..."


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def apply_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add, replace and remove (what webhooks answer with)."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        else:
            parent[last] = op["value"]
    return doc


class AdmissionRefused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class MutatingAdmission(ApiServerEmulator):
    # (namespace, Service name) -> "host:port" where that Service's webhook port is served.
    service_routes: dict[tuple[str, str], str]
    admission_calls: list[AdmissionCall]

    async def _handle(self, request: Any) -> Any:
        if (
            request.resource is not None
            and isinstance(request.data, dict)
            and not str(request.url.path).endswith("/status")
            and request.action in (enums.action.CREATE, enums.action.UPDATE)
            and self._webhooks()
        ):
            try:
                await self._admit(request)
            except AdmissionRefused as exc:
                status = {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                          "code": exc.code, "reason": "Forbidden" if exc.code == 403
                          else "InternalError", "message": str(exc)}  # fmt: skip
                return aiohttp.web.json_response(status, status=exc.code)
        return await super()._handle(request)

    def _webhooks(self) -> list[dict[str, Any]]:
        found = []
        for key in list(self.objects):
            if str(key[0].plural) == "mutatingwebhookconfigurations":
                config = self.objects[key]
                if not config.deleted:
                    found.extend(config.raw.get("webhooks") or [])
        return found

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        try:
            ns = dict(self.objects["v1/namespaces", None, namespace].raw)
        except KeyError:
            ns = {}
        labels = dict((ns.get("metadata") or {}).get("labels") or {})
        labels["kubernetes.io/metadata.name"] = namespace
        return labels

    async def _admit(self, request: Any) -> None:
        resource = request.resource
        data: dict[str, Any] = request.data
        namespace = str(request.namespace or (data.get("metadata") or {}).get("namespace") or "")
        old: dict[str, Any] | None = None
        if request.action == enums.action.CREATE:
            operation, obj = "CREATE", copy.deepcopy(data)
        else:
            try:
                current = self.objects[resource, request.namespace, request.name]
            except KeyError:
                return  # a 404 for the API server's own handling
            if current.deleted:
                return
            old = copy.deepcopy(current.raw)
            operation, obj = "UPDATE", apply_merge_patch(old, data)
        group, version, plural = (
            str(resource.group or ""),
            str(resource.version),
            str(resource.plural),
        )
        admitted = obj
        for webhook in self._webhooks():
            if not any(_rule_matches(rule, group, version, plural, operation)
                       for rule in webhook.get("rules") or []):  # fmt: skip
                continue
            if namespace and not selector_matches(
                webhook.get("namespaceSelector"), self._namespace_labels(namespace)
            ):
                continue
            object_labels = [(admitted.get("metadata") or {}).get("labels") or {}]
            if old is not None:
                object_labels.append((old.get("metadata") or {}).get("labels") or {})
            if not any(selector_matches(webhook.get("objectSelector"), dict(labels))
                       for labels in object_labels):  # fmt: skip
                continue
            admitted = await self._call(webhook, operation, group, version, plural,
                                        namespace, admitted, old)  # fmt: skip
        if admitted == obj:
            return
        if old is None:
            data.clear()
            data.update(admitted)
        else:
            data.clear()
            data.update(merge_patch_diff(old, admitted))

    async def _call(
        self, webhook: dict[str, Any], operation: str, group: str, version: str, plural: str,
        namespace: str, obj: dict[str, Any], old: dict[str, Any] | None,
    ) -> dict[str, Any]:  # fmt: skip
        name = str((obj.get("metadata") or {}).get("name") or "")
        calls = self.__dict__.setdefault("admission_calls", [])
        uid = str(uuid.uuid4())
        gvk = {"group": group, "version": version, "kind": str(obj.get("kind") or "")}
        gvr = {"group": group, "version": version, "resource": plural}
        review = {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk,
                "requestResource": gvr, "name": name, "namespace": namespace,
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:test:deployer"},
                "object": obj, "oldObject": old, "dryRun": False,
            },
        }  # fmt: skip
        client = webhook.get("clientConfig") or {}
        tls = ssl.create_default_context()
        if client.get("caBundle"):
            tls = ssl.create_default_context(cadata=base64.b64decode(client["caBundle"]).decode())
        if client.get("url"):
            url, server_hostname = str(client["url"]), None
        else:
            svc = client["service"]
            routes = self.__dict__.get("service_routes", {})
            address = routes.get((svc["namespace"], svc["name"]), "127.0.0.1:1")
            url = f"https://{address}{svc.get('path') or '/'}"
            server_hostname = f"{svc['name']}.{svc['namespace']}.svc"
        timeout = aiohttp.ClientTimeout(total=float(webhook.get("timeoutSeconds") or 10))
        try:
            async with aiohttp.ClientSession() as http, http.post(
                url, json=review, ssl=tls, server_hostname=server_hostname, timeout=timeout
            ) as resp:  # fmt: skip
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
                answer = (await resp.json())["response"]
            if answer.get("uid") != uid:
                raise RuntimeError(f"response uid {answer.get('uid')!r} is not {uid!r}")
        except (aiohttp.ClientError, TimeoutError, RuntimeError, ssl.SSLError, KeyError,
                ValueError) as exc:  # fmt: skip
            reason = f"failed calling webhook {webhook['name']!r}: {exc!r}"
            if webhook.get("failurePolicy", "Fail") == "Ignore":
                calls.append(AdmissionCall(webhook["name"], operation, namespace, name,
                                           f"failed: {reason} (ignored)"))  # fmt: skip
                return obj
            calls.append(AdmissionCall(webhook["name"], operation, namespace, name,
                                       f"failed: {reason}"))  # fmt: skip
            raise AdmissionRefused(500, f"Internal error occurred: {reason}") from exc
        if not answer.get("allowed"):
            calls.append(AdmissionCall(webhook["name"], operation, namespace, name, "refused"))
            message = (answer.get("status") or {}).get("message") or "denied"
            raise AdmissionRefused(403, f"admission webhook {webhook['name']!r} denied: {message}")
        if not answer.get("patch"):
            calls.append(AdmissionCall(webhook["name"], operation, namespace, name, "unchanged"))
            return obj
        assert answer.get("patchType") == "JSONPatch", answer
        ops = json.loads(base64.b64decode(answer["patch"]))
        calls.append(AdmissionCall(webhook["name"], operation, namespace, name, "patched"))
        return apply_json_patch(obj, ops)


def _rule_matches(rule: dict[str, Any], group: str, version: str, plural: str, op: str) -> bool:
    def has(key: str, value: str) -> bool:
        listed = rule.get(key) or []
        return "*" in listed or value in listed

    return (has("apiGroups", group) and has("apiVersions", version)
            and has("resources", plural) and has("operations", op))  # fmt: skip
