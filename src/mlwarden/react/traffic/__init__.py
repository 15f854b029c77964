"""Traffic routers: how much traffic reaches the stable and the canary version, and how to move it.

Every router implements one small protocol (as Flagger's `pkg/router` does), one file each:

    router          the protocol (`Router`), `Weights`, `TrafficError` and `next_step`
    httproute       Gateway API HTTPRoute: `spec.rules[].backendRefs[].{name, weight}`
    virtualservice  Istio VirtualService: `spec.http[].route[].{destination.host/subset, weight}`
    replicas        no mesh: two Deployments behind one Service, traffic ∝ ready replicas
    registry        `ROUTERS`: `spec.reactions[].router` → the router (Flagger's factory.go)

The protocol module never imports a router; the routers import it; only the registry imports
the routers. Adding a mesh is adding a file and a line in `registry.ROUTERS`.
"""
