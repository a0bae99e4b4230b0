"""Where callbacks may go: the ``--callback-allow`` list and the checks made against it.

A callback URL comes from whoever calls a function, and the node POSTs to it: without a limit
any caller could make the node send requests to addresses only it reaches (the cloud's
metadata service, an admin port on loopback, the internal network): server-side request
forgery. So the operator lists what may be called back, comma-separated:

- a CIDR or an address (``10.0.0.0/8``, ``192.0.2.7``, ``::1``): URLs whose host is an IP
  address in it, and resolved addresses in it;
- a host name (``hooks.example.com``) or every name under a domain (``*.example.com``): URLs
  with that host name;
- ``*``: a URL with any host name.

A host name allowed by name still has to resolve, at delivery, to a *public* address or to
one inside a listed CIDR: a name whose DNS answer changes to ``169.254.169.254`` after the
call was accepted (DNS rebinding) is refused then. An IP address in a URL is allowed by the
CIDRs alone. The default, ``127.0.0.0/8,::1,localhost``, allows callbacks to the node's own
machine only, so a demo works out of the box and nothing else is reached until the operator
says so; an empty list refuses every callback.

The checks here are pure (no DNS); ``callbacks.py`` resolves and calls ``allows_address``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from tierfaas.errors import BadCallback, ConfigError

DEFAULT_CALLBACK_ALLOW = "127.0.0.0/8,::1,localhost"
MAX_URL_CHARS = 2048
SCHEMES = ("http", "https")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_NAME_RE = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_PATH_RE = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*")


@dataclass(frozen=True, slots=True)
class AllowList:
    """The parsed ``--callback-allow``: networks, exact host names, domain suffixes, and
    whether any host name is allowed (``*``)."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()  # ".example.com" for "*.example.com"
    any_name: bool = False

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Parses the comma-separated setting. Raises ``ConfigError("callback_allow", ...)``
        naming the entry that is neither a CIDR, an address, a host name nor ``*.domain``."""
        networks: list[IPNetwork] = []
        names: set[str] = set()
        suffixes: list[str] = []
        any_name = False
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                any_name = True
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            domain = entry[2:] if entry.startswith("*.") else entry
            if not _is_host_name(domain):
                raise ConfigError(
                    "callback_allow",
                    f"{raw.strip()!r} is not a CIDR, an IP address, a host name or *.domain",
                )
            if entry.startswith("*."):
                suffixes.append("." + domain.rstrip("."))
            else:
                names.add(domain.rstrip("."))
        return cls(tuple(networks), frozenset(names), tuple(suffixes), any_name)

    @property
    def empty(self) -> bool:
        return not (self.networks or self.names or self.suffixes or self.any_name)

    def allows_name(self, host: str) -> bool:
        """Whether the host name (lower case, no trailing dot) is allowed by name."""
        return self.any_name or host in self.names or any(host.endswith(s) for s in self.suffixes)

    def in_networks(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def allows_address(self, host: str, address: IPAddress) -> bool:
        """Whether a delivery to ``host`` may connect to ``address``: an address inside a
        listed network, or a public address of a host allowed by name."""
        if self.in_networks(address):
            return True
        return _ip(host) is None and self.allows_name(host) and address.is_global

    def allowed_addresses(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The ``addresses`` (text, as a resolver gives them) a delivery to ``host`` may use."""
        kept = []
        for text in addresses:
            address = _ip(text)
            if address is not None and self.allows_address(host, address):
                kept.append(text)
        return kept

    def describe(self) -> str:
        """The list as the setting would write it (for logs and the docs' examples)."""
        parts = [str(network) for network in self.networks] + sorted(self.names)
        parts += [f"*{suffix}" for suffix in self.suffixes] + (["*"] if self.any_name else [])
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """A checked callback URL: ``url`` normalized, and its parts for the delivery."""

    url: str
    scheme: str
    host: str  # lower case; an IPv6 address without brackets
    port: int
    target: str  # the path and query, at least "/"

    @property
    def is_address(self) -> bool:
        return _ip(self.host) is not None


def check_callback_url(url: str, allow: AllowList) -> str:
    """Checks an ``X-Callback-Url`` against its syntax and the allow list, without DNS;
    returns it normalized (lower-case scheme and host, default path ``/``). Raises
    ``BadCallback`` (400 ``bad_callback``) saying what is wrong."""
    return parse_callback_url(url, allow).url


def parse_callback_url(url: str, allow: AllowList) -> CallbackTarget:
    """``check_callback_url``, returning the URL's parts too."""
    if len(url) > MAX_URL_CHARS:
        raise BadCallback(f"X-Callback-Url is longer than {MAX_URL_CHARS} characters")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise BadCallback("X-Callback-Url must be printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadCallback(f"X-Callback-Url is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise BadCallback(
            f"X-Callback-Url {_show(url)}: the scheme must be http or https, e.g. "
            "http://hooks.example.com/done"
        )
    if parts.username is not None or parts.password is not None:
        raise BadCallback("X-Callback-Url may not carry a user or password")
    if parts.fragment:
        raise BadCallback("X-Callback-Url may not carry a #fragment")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise BadCallback(f"X-Callback-Url {_show(url)} has no host")
    if port == 0:
        raise BadCallback(f"X-Callback-Url {_show(url)}: port 0 is not a port")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if not target.startswith("/") or not _PATH_RE.fullmatch(target):
        raise BadCallback(f"X-Callback-Url {_show(url)} has an unusable path")
    address = _ip(host)
    if address is None and not _is_host_name(host):
        raise BadCallback(f"X-Callback-Url {_show(url)}: {host!r} is not a host name")
    allowed = allow.in_networks(address) if address is not None else allow.allows_name(host)
    if not allowed:
        listed = allow.describe() or "nothing: callbacks are off"
        raise BadCallback(
            f"X-Callback-Url {_show(url)}: the node may not call back {host!r} (its "
            f"--callback-allow lists {listed})"
        )
    default_port = 443 if scheme == "https" else 80
    actual_port = default_port if port is None else port
    shown_host = f"[{host}]" if ":" in host else host
    netloc = shown_host if port is None or port == default_port else f"{shown_host}:{port}"
    normalized = SplitResult(scheme, netloc, parts.path or "/", parts.query, "").geturl()
    return CallbackTarget(normalized, scheme, host, actual_port, target)


def _ip(text: str) -> IPAddress | None:
    """The address ``text`` is, if it is one; an IPv4-mapped IPv6 address as its IPv4 one,
    so ``::ffff:127.0.0.1`` meets the same networks as ``127.0.0.1``."""
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_host_name(host: str) -> bool:
    """A DNS name whose last label is not all digits (``2130706433`` or ``0x7f.1`` are
    addresses in disguise, which resolvers turn into 127.0.0.1)."""
    return (
        len(host) <= 253
        and _HOST_NAME_RE.fullmatch(host) is not None
        and not host.rstrip(".").rsplit(".", 1)[-1].isdigit()
    )


def _show(value: str, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
