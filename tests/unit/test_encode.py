import pytest

from tierfaas.runtime.process.child import encode_result


@pytest.mark.parametrize(
    ("value", "body", "content_type"),
    [
        (b"\x00raw", b"\x00raw", "application/octet-stream"),
        ("héllo", "héllo".encode(), "text/plain; charset=utf-8"),
        (None, b"", "text/plain; charset=utf-8"),
        ({"a": [1, 2]}, b'{"a":[1,2]}', "application/json"),
        ([1, "x"], b'[1,"x"]', "application/json"),
        (3.5, b"3.5", "application/json"),
    ],
)
def test_encode_result(value: object, body: bytes, content_type: str) -> None:
    assert encode_result(value) == (body, content_type)


@pytest.mark.parametrize("value", [object(), {"x": {1, 2}}, float("nan")])
def test_unserialisable_values_raise(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_result(value)
