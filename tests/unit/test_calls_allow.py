"""The callback allow list and the accept-time check of X-Callback-Url (no DNS)."""

from __future__ import annotations

import ipaddress

import pytest

from tierfaas.calls.allow import (
    DEFAULT_CALLBACK_ALLOW,
    AllowList,
    check_callback_url,
    parse_callback_url,
)
from tierfaas.config import NodeConfig
from tierfaas.errors import BadCallback, ConfigError

DEFAULT = AllowList.parse(DEFAULT_CALLBACK_ALLOW)
OPEN = AllowList.parse("*")


def refused(url: str, allow: AllowList = DEFAULT) -> str:
    with pytest.raises(BadCallback) as raised:
        check_callback_url(url, allow)
    assert (raised.value.status, raised.value.code) == (400, "bad_callback")
    return raised.value.message


def test_the_default_allows_this_machine_only() -> None:
    assert check_callback_url("http://127.0.0.1:9000/done", DEFAULT) == "http://127.0.0.1:9000/done"
    assert (
        check_callback_url("http://localhost:9000/x?a=1", DEFAULT) == "http://localhost:9000/x?a=1"
    )
    assert check_callback_url("http://[::1]:9000/", DEFAULT) == "http://[::1]:9000/"
    assert "may not call back '10.0.0.5'" in refused("http://10.0.0.5/hook")
    assert "may not call back 'hooks.example.com'" in refused("http://hooks.example.com/")
    assert "127.0.0.0/8,::1/128,localhost" in refused("http://hooks.example.com/")


def test_the_url_is_normalized() -> None:
    assert check_callback_url("HTTP://LocalHost:80", DEFAULT) == "http://localhost/"
    assert check_callback_url("https://localhost:443/a", DEFAULT) == "https://localhost/a"
    assert check_callback_url("http://localhost./a", DEFAULT) == "http://localhost/a"
    target = parse_callback_url("https://localhost/a/b?c=d", DEFAULT)
    assert (target.scheme, target.host, target.port, target.target) == (
        "https",
        "localhost",
        443,
        "/a/b?c=d",
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "scheme must be http or https"),
        ("localhost:9000/done", "scheme must be http or https"),
        ("ftp://localhost/", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("http:///path", "has no host"),
        ("http://user:pw@localhost/", "user or password"),
        ("http://localhost@10.0.0.1/", "user or password"),
        ("http://localhost/#frag", "fragment"),
        ("http://localhost:99999/", "not a URL"),
        ("http://localhost:x/", "not a URL"),
        ("http://localhost:0/", "port 0"),
        ("http://local host/", "without spaces"),
        ("http://localhost/\u00e9", "printable ASCII"),
        ("http://localhost/a\nb", "printable ASCII"),
        ("http://" + "a" * 3000 + "/", "longer than"),
        ("http://under_score.example/", "not a host name"),
        ("http://2130706433/", "not a host name"),  # 127.0.0.1 in disguise
        ("http://0x7f.1/", "not a host name"),
        ("http://localhost/a b", "without spaces"),
        ("http://localhost/<script>", "unusable path"),
    ],
)
def test_malformed_urls(url: str, reason: str) -> None:
    assert reason in refused(url, OPEN)


def test_a_star_allows_every_name_but_no_address() -> None:
    assert check_callback_url("http://hooks.example.com/x", OPEN) == "http://hooks.example.com/x"
    assert "may not call back '169.254.169.254'" in refused("http://169.254.169.254/", OPEN)


def test_names_and_domains() -> None:
    allow = AllowList.parse("hooks.example.com, *.corp.example")
    check_callback_url("http://HOOKS.example.com/", allow)
    check_callback_url("http://a.b.corp.example/", allow)
    refused("http://corp.example/", allow)  # *.domain is the names under it
    refused("http://evilcorp.example/", allow)
    refused("http://hooks.example.com.evil.test/", allow)


def test_networks_allow_addresses() -> None:
    allow = AllowList.parse("10.0.0.0/8,192.0.2.7,2001:db8::/32")
    check_callback_url("http://10.1.2.3:8080/", allow)
    check_callback_url("http://192.0.2.7/", allow)
    check_callback_url("http://[2001:db8::1]/", allow)
    refused("http://192.0.2.8/", allow)
    refused("http://[::ffff:127.0.0.1]/", allow)


def test_an_ipv4_mapped_address_meets_the_ipv4_networks() -> None:
    check_callback_url("http://[::ffff:127.0.0.1]:9000/", DEFAULT)


def test_an_empty_list_refuses_everything() -> None:
    allow = AllowList.parse("")
    assert allow.empty
    assert "callbacks are off" in refused("http://127.0.0.1/", allow)


@pytest.mark.parametrize("text", ["not a host", "10.0.0.0/33", "*", "*.", "a..b", "-x.com", "1.2"])
def test_a_bad_entry_names_the_setting(text: str) -> None:
    if text == "*":
        assert AllowList.parse(text).any_name
        return
    with pytest.raises(ConfigError) as raised:
        AllowList.parse(text)
    assert raised.value.field == "callback_allow"


def test_the_node_refuses_to_start_with_a_bad_list() -> None:
    with pytest.raises(ConfigError) as raised:
        NodeConfig(callback_allow="10.0.0.0/8, not valid")
    assert raised.value.field == "callback_allow"
    with pytest.raises(ConfigError, match="callback_retries"):
        NodeConfig(callback_retries=21)
    with pytest.raises(ConfigError, match="callback_timeout_s"):
        NodeConfig(callback_timeout_s=0)
    assert NodeConfig().callback_allow == DEFAULT_CALLBACK_ALLOW


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_at_delivery_a_name_must_resolve_to_a_public_address_or_a_listed_one() -> None:
    allow = AllowList.parse("hooks.example.com,10.9.0.0/16")
    assert allow.allows_address("hooks.example.com", ip("93.184.216.34"))
    assert allow.allows_address("hooks.example.com", ip("10.9.1.1"))
    # DNS rebinding: the allowed name now points inside.
    assert not allow.allows_address("hooks.example.com", ip("169.254.169.254"))
    assert not allow.allows_address("hooks.example.com", ip("127.0.0.1"))
    assert not allow.allows_address("hooks.example.com", ip("10.1.0.1"))
    # A name not allowed by name reaches listed networks only.
    assert not allow.allows_address("other.test", ip("93.184.216.34"))
    assert allow.allows_address("other.test", ip("10.9.0.1"))
    assert allow.allowed_addresses("hooks.example.com", ["169.254.169.254", "93.184.216.34"]) == [
        "93.184.216.34"
    ]
    assert DEFAULT.allowed_addresses("localhost", ["::1", "127.0.0.1", "10.0.0.1"]) == [
        "::1",
        "127.0.0.1",
    ]
