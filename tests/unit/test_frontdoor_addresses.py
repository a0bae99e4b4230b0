"""The front door's backend addresses, parsed without a socket."""

from __future__ import annotations

import pytest

from tierfaas.up.frontdoor import parse_hostport


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_hostport("http://node-1:80/") == ("node-1", 80)
    assert parse_hostport("[::1]:9000") == ("::1", 9000)
    for bad in ("nope", "host:", ":80", "h:0", "h:99999"):
        with pytest.raises(ValueError):
            parse_hostport(bad)
