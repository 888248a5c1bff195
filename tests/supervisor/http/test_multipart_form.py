from __future__ import annotations

import pytest

from supervisor.http.errors import ApiError
from supervisor.http.multipart_form import boundary_of, read_form

BOUNDARY = b"xyz123"


def body(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + data + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n"


def reader(data: bytes, chunk: int = 7):
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    async def read() -> bytes | None:
        return chunks.pop(0) if chunks else None

    return read


async def parse(data: bytes, max_body: int = 10_000, limits=None, chunk: int = 7):
    return await read_form(reader(data, chunk), BOUNDARY, len(data), max_body, limits or {})


async def test_fields_and_files_arrive_whole_whatever_the_chunking():
    data = body(("job_id", b"j1", None), ("person_image", b"\x00\r\n--xy\xff" * 50, "p.jpg"), ("job_id", b"j2", None))
    for chunk in (1, 3, 64, len(data)):
        form = await parse(data, chunk=chunk)
        assert [p.data for p in form["job_id"]] == [b"j1", b"j2"]
        (image,) = form["person_image"]
        assert image.filename == "p.jpg" and image.data == b"\x00\r\n--xy\xff" * 50


async def test_body_over_the_limit_is_413_as_soon_as_it_is_crossed():
    calls = 0
    data = body(("a", b"x" * 5000, None))

    async def read():
        nonlocal calls
        calls += 1
        return data[(calls - 1) * 100 : calls * 100] or None

    with pytest.raises(ApiError) as caught:
        await read_form(read, BOUNDARY, None, 1000, {})
    assert caught.value.status == 413
    assert calls == 11  # stopped reading right after the limit


async def test_named_part_over_its_limit_is_413_naming_it():
    with pytest.raises(ApiError) as caught:
        await parse(body(("garment_image", b"x" * 300, "g.png")), limits={"garment_image": 200})
    assert caught.value.status == 413 and "garment_image" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"no boundary anywhere in this body at all",
        b"--xyz123\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated",
        b"",
    ],
)
async def test_malformed_or_incomplete_multipart_is_400(data):
    with pytest.raises(ApiError) as caught:
        await parse(data)
    assert caught.value.status == 400 and caught.value.code == "bad_request"


async def test_empty_form_is_valid_and_empty():
    assert await parse(b"--xyz123--\r\n") == {}


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "multipart/form-data", "multipart/mixed; boundary=a", "text/plain; boundary=a"],
)
def test_boundary_of_refuses_anything_but_multipart_form_data(content_type):
    with pytest.raises(ApiError) as caught:
        boundary_of(content_type)
    assert caught.value.status == 400


def test_boundary_of_reads_quoted_and_plain_boundaries():
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of('multipart/form-data; boundary="a b"') == b"a b"


async def test_text_parts_are_kept_only_up_to_keep_bytes_but_their_size_is_known():
    from supervisor.http.multipart_form import KEEP_BYTES

    big = b"c" * (KEEP_BYTES * 3 + 5)
    form = await parse(body(("config", big, None), ("person_image", b"i" * (KEEP_BYTES * 2), "p.png")),
                       max_body=10**7, limits={"person_image": 10**6}, chunk=4096)
    (config,) = form["config"]
    assert config.size == len(big) and config.data == big[:KEEP_BYTES]
    (image,) = form["person_image"]  # parts with a limit of their own are kept whole
    assert image.size == len(image.data) == KEEP_BYTES * 2
