{{/*
Names, labels and images shared by the templates, and the operator's RBAC rules: the one
list the ClusterRole and the per-namespace Roles both render.
*/}}

{{- define "mlwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's objects: truncated at 63 characters (DNS-1123 labels).
*/}}
{{- define "mlwarden.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object the chart renders.
*/}}
{{- define "mlwarden.labels" -}}
helm.sh/chart: {{ include "mlwarden.chart" . }}
app.kubernetes.io/name: {{ include "mlwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlwarden
{{- end }}

{{/*
The operator pods' selector (immutable on a Deployment: never add to it).
*/}}
{{- define "mlwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "mlwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlwarden.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}; a digest wins over a tag.
Called with (dict "image" .Values.image "fallback" (dict ...) "appVersion" .Chart.AppVersion).
*/}}
{{- define "mlwarden.imageRef" -}}
{{- $fallback := .fallback | default dict }}
{{- $repository := .image.repository | default $fallback.repository }}
{{- $digest := .image.digest | default $fallback.digest }}
{{- $tag := .image.tag | default $fallback.tag | default .appVersion }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString $tag) }}
{{- end }}
{{- end }}

{{/* The operator's image. */}}
{{- define "mlwarden.image" -}}
{{- include "mlwarden.imageRef" (dict "image" .Values.image "appVersion" .Chart.AppVersion) }}
{{- end }}

{{/*
The image of the detectors and sidecars (MLWARDEN_IMAGE): componentImage's fields, each falling
back to image's. image.digest is only inherited with image.repository (a digest names one image).
*/}}
{{- define "mlwarden.componentImage" -}}
{{- $c := .Values.componentImage }}
{{- if or $c.repository $c.tag $c.digest }}
{{- $fallback := dict "repository" .Values.image.repository "tag" .Values.image.tag }}
{{- include "mlwarden.imageRef" (dict "image" $c "fallback" $fallback "appVersion" .Chart.AppVersion) }}
{{- else }}
{{- include "mlwarden.image" . }}
{{- end }}
{{- end }}

{{/* "true" when kopf runs with peering (more than one replica), else "". */}}
{{- define "mlwarden.peering" -}}
{{- if gt (int .Values.replicas) 1 }}true{{ end }}
{{- end }}

{{/*
The resources of detectors or sidecars as MLWARDEN_<PREFIX>_{CPU,MEMORY}_{REQUEST,LIMIT}
variables. Called with (dict "prefix" "MLWARDEN_SIDECAR" "resources" .Values.sidecar.resources).
A quantity left out is not set, and the operator's default applies.
*/}}
{{- define "mlwarden.resourceEnv" -}}
{{- $prefix := .prefix }}
{{- range $kind := list "requests" "limits" }}
{{- $suffix := ternary "REQUEST" "LIMIT" (eq $kind "requests") }}
{{- $quantities := index $.resources $kind | default dict }}
{{- range $resource := list "cpu" "memory" }}
{{- if hasKey $quantities $resource }}
- name: {{ printf "%s_%s_%s" $prefix (upper $resource) $suffix }}
  value: {{ index $quantities $resource | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Every API call the operator makes, as RBAC rules: exact verbs and resources, no wildcards.
The ClusterRole (all namespaces) and each namespace's Role render this same list; keep it in
step with src/mlwarden/kube.py (KINDS) and handlers.py. tests/chart/test_chart.py
checks it against an expected list of (apiGroup, resource, verb).
*/}}
{{- define "mlwarden.operatorRules" -}}
# Exactly what the operator calls (tests/operator/test_rbac_audit.py checks both ways).
# ObservedModels: kopf lists and watches them and patches finalizers and annotations; the
# operator reads one back before a reaction.
- apiGroups: ["mlwarden.io"]
  resources: ["observedmodels"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written by the operator (patch). get: each detector's Role grants get and patch
# on its own ObservedModel's status, and RBAC forbids granting a verb one does not hold.
- apiGroups: ["mlwarden.io"]
  resources: ["observedmodels/status"]
  verbs: ["get", "patch"]
# No call uses this one: the owner references the operator puts on the detector's objects
# set blockOwnerDeletion, and where OwnerReferencesPermissionEnforcement is on (OpenShift)
# the API server admits that only from a client that may update the owner's finalizers.
- apiGroups: ["mlwarden.io"]
  resources: ["observedmodels/finalizers"]
  verbs: ["update"]
# Fleet incidents (kubectl get incidents): written by the operator, owned by the ObservedModels
# they name (garbage-collected with the last of them); deleted once resolved for a while.
- apiGroups: ["mlwarden.io"]
  resources: ["incidents"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The detector's objects (NAME-detector, NAME-reference): read, created when missing, patched
# back when they differ from what they should be. The target Service is read and repointed at
# the sidecar (restored on deletion) and watched for the injection check; ConfigMaps are
# also watched for diagnosis, and the detector's Role grants get and patch on NAME-reference
# (the escalation rule again).
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch"]
# The detector's Deployment, and the target Deployment the sidecar is injected into (and
# rolled back or scaled by reactions); watched for diagnosis.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The detector's Role and RoleBinding (observedmodels/status and its NAME-reference
# ConfigMap, get+patch by resourceName).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch"]
# The per-model ingest token (Secret NAME-ingest-token): created once, never read. Without get
# or list the operator cannot read any Secret, this one included (a 409 says it exists).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
# The detector's NetworkPolicy (with networkPolicy.enabled).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch"]
# Events on ObservedModels: kopf's handler reports and mlwarden's alert, phase and reaction
# events (core v1 Events, created).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Diagnosis (read-only, watched: one list in pages at start-up, then one watch per kind, kept
# in memory): the revision history of the target Deployment and the pipeline components an
# ObservedModel names (spec.pipeline), for the change timeline; Pods for restarts and crash
# loops; ControllerRevisions are StatefulSets' and DaemonSets' history. Secrets are
# deliberately absent: diagnosis needs no secret, not even its metadata.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: ["apps"]
  resources: ["replicasets", "statefulsets", "daemonsets", "controllerrevisions"]
  verbs: ["list", "watch"]
# Targets of other kinds (spec.target.kind). A StatefulSet or an Argo Rollout: read, its pod
# template patched (the sidecar in, and out on deletion; a rollback restores an older
# template; a Rollout's pause sets spec.paused), watched for the reactions. A Rollout's abort
# is the merge patch `kubectl argo rollouts abort` sends to its status subresource. A KServe
# InferenceService: read, its spec.predictor.logger patched (and restored), its
# canaryTrafficPercent set to 0 by a reaction. A kind the cluster does not serve (no Argo
# Rollouts or KServe CRD) is not watched.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "patch"]
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["argoproj.io"]
  resources: ["rollouts/status"]
  verbs: ["patch"]
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["batch"]
  resources: ["jobs", "cronjobs"]
  verbs: ["list", "watch"]
# Reactions: scale raises the minReplicas of the HPA that scales the target; shiftTraffic
# moves the weights of a Gateway API HTTPRoute or an Istio VirtualService (either may be
# absent from the cluster: the operator does not watch a kind that is not served and reads it
# as empty). Watched like the kinds above. get: a patch answered 409 Conflict (the HPA
# controller's status writes) re-reads the object and plans the action again.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "list", "watch", "patch"]
# Reactions, retrain: a Job started from a CronJob's jobTemplate (as `kubectl create job
# --from=cronjob/NAME` does) or from a Job manifest in a ConfigMap (get: above), or an Argo
# Workflow submitted from a WorkflowTemplate. get: the source when the run is started, the run
# by its name first (an operator restarted after creating it), a new Job the watch has not
# brought yet, and a Workflow while it runs (Workflows are not watched).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "create"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get"]
- apiGroups: ["argoproj.io"]
  resources: ["workflows"]
  verbs: ["get", "create"]
- apiGroups: ["argoproj.io"]
  resources: ["workflowtemplates"]
  verbs: ["get"]
{{- end }}

{{/* Labels of the Prometheus targets' job: the alerting rules select on these. */}}
{{- define "mlwarden.jobRelabeling" -}}
- action: replace
  targetLabel: job
  replacement: {{ . }}
{{- end }}

{{/*
The Secret holding the admission webhook's certificate (webhook mode): made by the chart or
by cert-manager, mounted into every operator replica.
*/}}
{{- define "mlwarden.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "mlwarden.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
