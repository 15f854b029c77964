"""The operator: reconcile each ObservedModel into its detector and the sidecar beside its model.

Lowest layer first (pure modules never import the shells):

- `settings`   OperatorSettings: images, ports, resources, injection mode; names and labels.
- `objects`    (pure) the detector's ConfigMap, ServiceAccount, Role, RoleBinding,
               Deployment and Service for one ObservedModel.
- `injection`  (pure) the sidecar injection and its exact undo, as merge patches over the
               target Deployment and Service, via the named-port indirection.
- `status`     (pure) phase and conditions from what the operator and detector know.
- `respond`    the diagnosis and reaction pass: collect, diagnose, plan, record, act, report.
- `handlers`   the kopf handlers: thin shells that read, call the pure parts, apply.

The API client is `mlwarden.kube`, shared with the detector and the demo.
"""
