"""The call log's frames read back (``logstore.read_frames``): a torn or corrupt tail is cut
off, never misread."""

from __future__ import annotations

from tierfaas.calls.logstore import _frame, _packb, read_frames


def _log(*records: list[object]) -> bytes:
    return b"".join(_frame(_packb(record)) for record in records)


def test_whole_frames_read_back_in_order() -> None:
    data = _log([2, ["a"]], [2, ["b", "c"]])
    frames, good = read_frames(data)
    assert [record for _, _, record in frames] == [[2, ["a"]], [2, ["b", "c"]]]
    assert good == len(data)
    assert frames[1][0] == frames[0][1]  # each offset is where the one before ended


def test_a_torn_last_frame_is_cut_at_every_length() -> None:
    whole = _log([2, ["a"]])
    last = _log([2, ["b" * 50]])
    for cut in range(len(last)):
        frames, good = read_frames(whole + last[:cut])
        assert [record for _, _, record in frames] == [[2, ["a"]]]
        assert good == len(whole)


def test_a_frame_that_fails_its_crc_ends_the_log() -> None:
    whole = _log([2, ["a"]])
    bad = bytearray(_log([2, ["b"]]))
    bad[-1] ^= 0x01
    frames, good = read_frames(whole + bytes(bad) + _log([2, ["c"]]))
    assert [record for _, _, record in frames] == [[2, ["a"]]]
    assert good == len(whole)


def test_a_valid_frame_of_no_known_record_ends_the_log() -> None:
    whole = _log([2, ["a"]])
    frames, good = read_frames(whole + _log([9, "?"]) + _frame(b"\xc1"))
    assert len(frames) == 1 and good == len(whole)
