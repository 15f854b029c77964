"""`ROUTERS`: the value of `spec.reactions[].router` → the router that implements it."""

from __future__ import annotations

from collections.abc import Mapping

from mlwarden.react.traffic.httproute import HTTPROUTE
from mlwarden.react.traffic.replicas import REPLICAS
from mlwarden.react.traffic.router import Router
from mlwarden.react.traffic.virtualservice import VIRTUALSERVICE

ROUTERS: Mapping[str, Router] = {
    "httproute": HTTPROUTE,
    "virtualservice": VIRTUALSERVICE,
    "replicas": REPLICAS,
}
