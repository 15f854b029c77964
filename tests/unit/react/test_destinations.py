"""The webhook allow-list (react/destinations.py): pure, with every resolution given."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from mlwarden.react.destinations import (
    DestinationError,
    WebhookAllowList,
    check_destination,
    webhook_host,
)

DEFAULT = WebhookAllowList.parse(None)
PUBLIC_IP = "151.101.1.69"  # a public address (what a SaaS webhook host resolves to)


def test_the_default_is_public_only() -> None:
    assert WebhookAllowList.parse("") == DEFAULT
    assert WebhookAllowList(public=True) == DEFAULT


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("public", WebhookAllowList(public=True)),
        ("hooks.slack.com", WebhookAllowList(public=False, hosts=("hooks.slack.com",))),
        (
            "public, *.Example.com.,alertmanager.monitoring.svc",
            WebhookAllowList(
                public=True,
                hosts=("alertmanager.monitoring.svc",),
                suffixes=(".example.com",),
            ),
        ),
        (
            "10.20.0.0/16 fd00::/8",
            WebhookAllowList(
                public=False, networks=(ip_network("10.20.0.0/16"), ip_network("fd00::/8"))
            ),
        ),
    ],
)
def test_parse(text: str, expected: WebhookAllowList) -> None:
    assert WebhookAllowList.parse(text) == expected


@pytest.mark.parametrize("text", ["https://hooks.slack.com", "*", "a.*.com", "10.0.0.0/33", "*."])
def test_parse_refuses_what_is_no_entry(text: str) -> None:
    with pytest.raises(DestinationError, match="MLWARDEN_WEBHOOK_ALLOW"):
        WebhookAllowList.parse(text)


# --------------------------------------------------------------------------- the default


def test_a_public_https_host_is_allowed() -> None:
    url = "https://hooks.slack.com/services/T000/B000/XXXX"
    assert check_destination(url, None, DEFAULT) is None  # resolve, then ask again
    assert check_destination(url, [PUBLIC_IP, "2a04:4e42::485"], DEFAULT) is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://hooks.slack.com/x", "only https"),
        ("ftp://hooks.slack.com/x", "not an http(s) URL"),
        ("https:///x", "not an http(s) URL"),
        ("https://alertmanager/x", "in-cluster name"),
        ("https://alertmanager.monitoring.svc/x", "in-cluster name"),
        ("https://alertmanager.monitoring.svc.cluster.local/x", "in-cluster name"),
        ("https://kubernetes.default.svc./x", "in-cluster name"),
        ("https://printer.local/x", "in-cluster name"),
    ],
)
def test_refused_by_the_url_alone_before_any_lookup(url: str, fragment: str) -> None:
    refused = check_destination(url, None, DEFAULT)
    assert refused is not None and fragment in refused


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local IPv6"),
        ("fe80::1%eth0", "scoped link-local IPv6"),
        ("fc00::1", "unique local IPv6"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("192.0.2.1", "documentation"),
    ],
)
def test_a_name_resolving_to_a_non_public_address_is_refused(address: str, kind: str) -> None:
    refused = check_destination("https://hooks.example.net/x", [address], DEFAULT)
    assert refused is not None and "not a public address" in refused, kind
    # One bad address among good ones is enough (the client could pick it).
    assert check_destination("https://hooks.example.net/x", [PUBLIC_IP, address], DEFAULT)


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/x",
        "https://[::1]:8443/x",
        "https://10.0.0.5/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://2130706433/x",  # 127.0.0.1 as one number: a name to urlsplit, never resolved
    ],
)
def test_a_private_ip_literal_is_refused(url: str) -> None:
    assert check_destination(url, None if "2130706433" not in url else ["127.0.0.1"], DEFAULT)


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest"]
)
def test_metadata_endpoints_are_never_allowed(url: str) -> None:
    for allow in (
        DEFAULT,
        WebhookAllowList.parse("169.254.0.0/16, fd00::/8"),
        WebhookAllowList.parse("169.254.169.254/32"),
    ):
        refused = check_destination(url, None, allow)
        assert refused is not None and "metadata" in refused


def test_a_listed_name_resolving_to_metadata_is_refused() -> None:
    allow = WebhookAllowList.parse("metadata.example.com")
    refused = check_destination("http://metadata.example.com/", ["169.254.169.254"], allow)
    assert refused is not None and "metadata" in refused
    assert check_destination("http://metadata.example.com/", ["::ffff:169.254.169.254"], allow)


def test_an_unresolvable_or_odd_answer_is_refused() -> None:
    assert check_destination("https://nx.example.net/", [], DEFAULT) == (
        "nx.example.net does not resolve"
    )
    refused = check_destination("https://odd.example.net/", ["not-an-ip"], DEFAULT)
    assert refused is not None and "not an address" in refused


# --------------------------------------------------------------------------- listed


def test_a_listed_in_cluster_host_is_allowed_over_http() -> None:
    allow = WebhookAllowList.parse("public, alertmanager.monitoring.svc")
    url = "http://alertmanager.monitoring.svc:9093/api/v2/alerts"
    assert check_destination(url, None, allow) is None
    assert check_destination(url, ["10.96.0.12"], allow) is None
    # Only that host: a sibling is still an in-cluster name.
    assert check_destination("http://grafana.monitoring.svc/", None, allow)


def test_a_wildcard_matches_subdomains_only() -> None:
    allow = WebhookAllowList.parse("*.hooks.example.com")
    assert check_destination("https://a.hooks.example.com/", ["10.0.0.1"], allow) is None
    assert check_destination("https://a.b.hooks.example.com/", ["10.0.0.1"], allow) is None
    assert check_destination("https://hooks.example.com/", [PUBLIC_IP], allow)  # not public
    assert check_destination("https://evilhooks.example.com/", [PUBLIC_IP], allow)


def test_a_network_allows_hosts_all_of_whose_addresses_are_in_it() -> None:
    allow = WebhookAllowList.parse("10.20.0.0/16")
    assert check_destination("http://10.20.3.4:8080/hook", None, allow) is None
    assert check_destination("http://hook.internal/", ["10.20.3.4"], allow) is None
    assert check_destination("http://hook.internal/", ["10.20.3.4", "10.30.0.1"], allow)
    assert check_destination("http://10.30.0.1/", None, allow)
    assert check_destination("https://hooks.slack.com/", [PUBLIC_IP], allow)  # no `public`


def test_without_public_only_the_list_is_allowed() -> None:
    allow = WebhookAllowList.parse("hooks.slack.com")
    assert check_destination("https://hooks.slack.com/x", [PUBLIC_IP], allow) is None
    refused = check_destination("https://discord.com/api/webhooks/x", None, allow)
    assert refused is not None and "not in the webhook allow-list" in refused


def test_loopback_only_when_listed() -> None:
    """What the operator tests set: their webhook servers listen on 127.0.0.1."""
    allow = WebhookAllowList.parse("127.0.0.1/32")
    assert check_destination("http://127.0.0.1:8080/hook", None, allow) is None
    assert check_destination("http://127.0.0.1:8080/hook", None, DEFAULT)


def test_webhook_host() -> None:
    assert webhook_host("https://User:pw@Hooks.Slack.COM.:443/x?y") == "hooks.slack.com"
    assert webhook_host("http://[fd00:ec2::254]/") == "fd00:ec2::254"
    assert webhook_host("not a url") is None


def test_an_address_entry_is_its_own_network() -> None:
    allow = WebhookAllowList.parse("public, 127.0.0.1")
    assert check_destination("http://127.0.0.1:9/hook", None, allow) is None
    assert check_destination("http://127.0.0.2:9/hook", None, allow)


def test_an_in_cluster_name_needs_its_name_listed_not_a_network() -> None:
    allow = WebhookAllowList.parse("public, 10.96.0.0/12")
    refused = check_destination("http://alertmanager.monitoring.svc/", None, allow)
    assert refused is not None and "in-cluster name" in refused  # decided before any lookup
    assert check_destination("http://hook.internal.example/", ["10.96.0.7"], allow) is None
