"""Where `reactions[].webhook` URLs may send: the allow-list check (pure, no network).

The operator runs inside the cluster with a service account: a URL someone wrote into an
ObservedModel must not make it post to the cloud's metadata endpoint, the API server, or any
in-cluster Service the writer could not reach themselves. The chart's `reactions.webhookAllow`
(env MLWARDEN_WEBHOOK_ALLOW, comma-separated) lists what is allowed; each entry is one of

    public            any https URL whose host is a public DNS name and all of whose
                      addresses are public (the default, and the only entry by default)
    hooks.slack.com   that host exactly (http or https, any address it resolves to but
                      the metadata endpoints; in-cluster names too, e.g.
                      alertmanager.monitoring.svc)
    *.example.com     any host under example.com (not example.com itself)
    10.20.0.0/16      an IP address in that network, or a host name (not an in-cluster
                      one) all of whose addresses fall in it (http or https); a bare
                      address such as 127.0.0.1 is its /32 (or /128)

Whatever the list says, the metadata endpoints (169.254.169.254, fd00:ec2::254) are
refused; in-cluster names (`*.svc`, `*.cluster.local`, `*.local`, a bare name without a dot)
unless listed by name, and with `public` loopback, link-local, private, shared, multicast
and reserved addresses unless listed by name or network. Addresses are those the host
resolves to (given by the caller: `check_destination` takes them, so a name that resolves to
127.0.0.1 is refused as 127.0.0.1 is), and the caller connects to exactly those addresses
afterwards, so a DNS answer that changes between the check and the request (rebinding)
changes nothing. What the URL alone decides is decided before any lookup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PUBLIC: Final = "public"
DEFAULT_ALLOW: Final = (PUBLIC,)
# Cloud metadata endpoints (AWS, GCP, Azure, OpenStack, ...; AWS's IPv6 one): never.
METADATA: Final = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
IN_CLUSTER_SUFFIXES: Final = (".svc", ".cluster.local", ".svc.cluster.local", ".local")


class DestinationError(ValueError):
    """An allow-list entry that is none of the forms the module docstring lists."""


@dataclass(frozen=True)
class WebhookAllowList:
    """The parsed allow-list: `public`, host names and patterns, networks."""

    public: bool = True
    hosts: tuple[str, ...] = ()  # exact names, lower-case
    suffixes: tuple[str, ...] = ()  # from "*.example.com": ".example.com"
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> WebhookAllowList:
        """From MLWARDEN_WEBHOOK_ALLOW (comma- or space-separated; unset or empty: `public`)."""
        entries = [e.strip() for e in (text or "").replace(",", " ").split()]
        if not entries:
            entries = list(DEFAULT_ALLOW)
        public = False
        hosts: list[str] = []
        suffixes: list[str] = []
        networks: list[Network] = []
        for entry in entries:
            lowered = entry.lower().rstrip(".")
            if lowered == PUBLIC:
                public = True
            elif "/" in lowered or _literal(lowered) is not None:  # an address: its /32, /128
                try:
                    networks.append(ipaddress.ip_network(lowered, strict=False))
                except ValueError as exc:
                    raise DestinationError(
                        f"MLWARDEN_WEBHOOK_ALLOW: {entry!r} is not a network ({exc})"
                    ) from exc
            elif lowered.startswith("*."):
                if len(lowered) < 3 or "*" in lowered[2:]:
                    raise DestinationError(f"MLWARDEN_WEBHOOK_ALLOW: {entry!r} is not a pattern")
                suffixes.append(lowered[1:])
            elif "*" in lowered or "://" in lowered or not lowered:
                raise DestinationError(
                    f"MLWARDEN_WEBHOOK_ALLOW: {entry!r} is not a host, *.domain, network or "
                    f"'{PUBLIC}'"
                )
            else:
                hosts.append(lowered)
        return cls(
            public=public, hosts=tuple(hosts), suffixes=tuple(suffixes), networks=tuple(networks)
        )


def webhook_host(url: str) -> str | None:
    """The URL's host, lower-case, without brackets or a trailing dot (None: none)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.rstrip(".").lower() if host else None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _public(address.ipv4_mapped)
    # is_global is False for private, loopback, link-local, shared (100.64/10), reserved,
    # documentation and unique-local ranges.
    return address.is_global and not address.is_multicast


def _named_in_cluster(host: str) -> bool:
    return "." not in host or host.endswith(IN_CLUSTER_SUFFIXES)


def check_destination(
    url: str, addresses: Sequence[str] | None, allow: WebhookAllowList
) -> str | None:
    """None when `url` may be posted to at `addresses` (its host's), else why it may not.

    `addresses`: what the host resolves to, empty when it does not resolve; None when it has
    not been resolved yet: then only what the URL alone decides is checked (a refusal, or
    None: resolve, and ask again with the addresses). An IP literal needs no resolution.
    Pure: the caller resolves, and connects to these addresses only.
    """
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return "not a URL"
    host = webhook_host(url)
    if scheme not in ("http", "https") or host is None:
        return "not an http(s) URL with a host"
    literal = _literal(host)
    listed = literal is None and (
        host in allow.hosts or any(host.endswith(s) for s in allow.suffixes)
    )
    if literal is None and not listed:
        if _named_in_cluster(host):
            return (
                f"{host} is an in-cluster name; list it (or *.its.domain) in the webhook "
                "allow-list (MLWARDEN_WEBHOOK_ALLOW) to allow it"
            )
        if not allow.public and not allow.networks:
            return f"{host} is not in the webhook allow-list (MLWARDEN_WEBHOOK_ALLOW)"
        if allow.public and not allow.networks and scheme != "https":
            return f"{host}: only https is allowed to public hosts (or list the host)"
    if literal is not None:
        parsed: list[Address] = [literal]
    elif addresses is None:
        return None  # resolve, then check the addresses
    else:
        parsed = []
        for text in addresses:
            address = _literal(text.split("%", 1)[0])  # a scoped IPv6 address: no zone
            if address is None:
                return f"{host} resolved to {text!r}, which is not an address"
            parsed.append(address)
    if not parsed:
        return f"{host} does not resolve"
    metadata = [a for a in parsed if _mapped(a) in METADATA or a in METADATA]
    if metadata:
        return f"{host} is a cloud metadata endpoint ({metadata[0]}); never allowed"
    if listed:
        return None
    if allow.networks and all(any(_mapped(a) in n for n in allow.networks) for a in parsed):
        return None
    if not allow.public:
        return f"{host} is not in the webhook allow-list (MLWARDEN_WEBHOOK_ALLOW)"
    if scheme != "https":
        return f"{host}: only https is allowed to public hosts (or list the host)"
    private = [a for a in parsed if not _public(a)]
    if private:
        return (
            f"{host} resolves to {private[0]}, which is not a public address (loopback, "
            "link-local, private or reserved); list the host or network to allow it"
        )
    return None


def _mapped(address: Address) -> Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
