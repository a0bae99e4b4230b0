"""The gRPC channel map is bounded: channels to peers no longer live are closed when a new
one is made, and past the cap the least recently used goes. (A channel opens no socket until
a call is made, and none is made here.)"""

from __future__ import annotations

from tierfaas.control.transport import Channels


async def test_channels_of_peers_no_longer_live_are_closed() -> None:
    live = {"127.0.0.1:1", "127.0.0.1:2"}
    channels = Channels(None, live=lambda: live)
    a, b = channels.get("127.0.0.1:1"), channels.get("127.0.0.1:2")
    assert channels.get("127.0.0.1:1") is a  # one per address
    live.discard("127.0.0.1:2")  # b's peer left
    live.add("127.0.0.1:3")
    channels.get("127.0.0.1:3")
    assert len(channels) == 2
    assert channels.get("127.0.0.1:1") is a
    await channels.close()  # also waits for the evicted ones to close
    assert b.channel.get_state().name == "SHUTDOWN"
    assert a.channel.get_state().name == "SHUTDOWN"


async def test_past_the_cap_the_least_recently_used_is_closed() -> None:
    channels = Channels(None, max_channels=2)
    first = channels.get("127.0.0.1:1")
    channels.get("127.0.0.1:2")
    channels.get("127.0.0.1:1")  # used again: now the most recent
    channels.get("127.0.0.1:3")
    assert len(channels) == 2
    assert channels.get("127.0.0.1:1") is first  # 2 went, not 1
    for n in range(4, 100):
        channels.get(f"127.0.0.1:{n}")
        assert len(channels) <= 2
    await channels.close()
    assert len(channels) == 0


async def test_retain_closes_every_other_channel() -> None:
    channels = Channels(None)
    for n in range(1, 5):
        channels.get(f"127.0.0.1:{n}")
    channels.retain({"127.0.0.1:2"})
    assert len(channels) == 1
    await channels.close()
