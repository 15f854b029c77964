"""React: what mlwarden does about an alert, within guardrails, recorded before it is done.

Lowest layer first; everything here is pure (no I/O, no clock: time comes in):

- `targets`     `split_target`: a record's patch key, `Kind/name` or `Kind/name/status`.
- `revisions`   the one resolution of a model revision to its owner (every target kind),
                its number and image; `status.revisions`' builder.
- `actions`     ActionRecord (the `status.reactions` entry: plan, audit and restart log in
                one), deterministic action ids, fingerprints of what an action set; its
                patches are read with `mlwarden.patches` (`apply_merge_patch`, `holds`).
- `traffic`     `router` (the Router protocol: `get_weights`, `set_weights`; `Weights`,
                `next_step`), one file per router (`httproute`, `virtualservice`,
                `replicas`), and `registry` (`ROUTERS`, name → router).
- `actuators`   one action each, as merge patches over raw objects: `rollback` (keeps the
                injected sidecar), `scale`, `pause`; `alert` builds the webhook payload;
                `retrain` builds the Job or Argo Workflow to create and reads its outcome.
- `guardrails`  one small function per guardrail: a reason not to act now, or None.
- `policy`      `plan_reactions`: alerts × spec.reactions × guardrails × history → the
                records to write; the shell acts on those whose result is Running.
- `incidents`   alerts grouped into incidents (start together, share a diagnosis), their
                severity, and fleets of models whose incidents share a top suspect; the
                alert helpers every planner uses (`alert_key`, `by_onset`, `matches`).
- `verify`      did an applied action fix its trigger (Fixed, NotFixed, Inconclusive), and
                `plan_undo`, its inverse for every target kind.
- `notifications` what people are told about an incident: the webhook message (Slack and
                JSON), the fleet's, and the alert for Alertmanager's v2 API.

The operator shell (not here) reads the objects, calls `plan_reactions`, writes each record
to `status.reactions` before acting, applies the patches, posts webhooks, writes Events, and
increments `mlwarden_operator_reactions_total{action, result}` (operator/metrics.py) with
`record.metric_result`.
"""
