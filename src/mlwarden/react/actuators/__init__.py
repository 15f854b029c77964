"""Actuators: each turns one action into the merge patch(es) that take it, reading raw objects.

    rollback  the target Deployment back to an earlier ReplicaSet's pod template, keeping
              mlwarden's injected sidecar (`kubectl rollout undo`, sidecar-aware)
    scale     replicas (or an HPA's minReplicas) up, within [minReplicas, maxReplicas]
    pause     a canary Deployment to zero replicas
    alert     the webhook payload (generic JSON and Slack-compatible); the Event and the
              condition are written by the operator shell
    retrain   not a patch: the Job (from a CronJob's jobTemplate, as `kubectl create job
              --from` does, or from a manifest in a ConfigMap) or the Argo Workflow (from a
              WorkflowTemplate) to create for an incident, and whether it has ended

Traffic shifts have their own routers in `mlwarden.react.traffic`. Everything here is pure:
the shell reads the objects, the policy calls these, the shell applies what they return.
"""
