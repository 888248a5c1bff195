"""Reading a multipart/form-data body as it streams in, with limits enforced on the way.

Parsing chunk by chunk (the `multipart` package's sans-IO parser) lets a body over
`server.max_body_bytes`, or an image over `images.max_bytes`, be refused as soon as the
limit is crossed instead of after the whole upload was buffered.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Mapping, NamedTuple

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from supervisor.http.errors import ApiError

MAX_PARTS = 64
# Parts without a limit of their own (text fields) are kept up to this many bytes; the
# rest is counted, not stored, so a huge field cannot cost more memory than this.
KEEP_BYTES = 64 * 1024


class FormPart(NamedTuple):
    filename: str | None
    data: bytes  # for a text part, at most KEEP_BYTES of it
    size: int  # the part's real size


Form = dict[str, list[FormPart]]


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data content type, else a 400."""
    mime, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mime != "multipart/form-data" or not boundary:
        raise ApiError(400, "bad_request", "the body must be multipart/form-data with a boundary")
    return boundary.encode("latin-1", "replace")


def too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"{what} is over the limit of {limit} bytes")


async def read_form(
    read_chunk: Callable[[], Awaitable[bytes | None]],
    boundary: bytes,
    content_length: int | None,
    max_body_bytes: int,
    part_limits: Mapping[str, int],
) -> Form:
    """Consume the body; `part_limits` caps the size of named parts (the images): over
    their limit is a 413. Other parts are truncated to KEEP_BYTES (their `size` says)."""
    parser = PushMultipartParser(
        boundary,
        content_length=-1 if content_length is None else content_length,
        max_segment_count=MAX_PARTS,
        # Not strict: strict mode refuses the epilogue CRLF after the closing boundary
        # when it arrives in a chunk of its own, which depends on the network.
        strict=False,
    )
    form: Form = {}
    received = 0
    segment: MultipartSegment | None = None
    chunks: list[bytes] = []
    limit: int | None = None
    try:
        while True:
            chunk = await read_chunk()
            if chunk is None:
                break
            received += len(chunk)
            if received > max_body_bytes:
                raise too_large("the request body", max_body_bytes)
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    segment, chunks = event, []
                    limit = part_limits.get(event.name or "")
                elif event is not None:
                    assert segment is not None
                    if limit is not None and segment.bytes_received > limit:
                        raise too_large(segment.name or "a part", limit)
                    if limit is not None or segment.bytes_received - len(event) < KEEP_BYTES:
                        chunks.append(bytes(event))
                else:
                    assert segment is not None
                    data = b"".join(chunks)
                    part = FormPart(segment.filename, data if limit is not None else data[:KEEP_BYTES], segment.size)
                    form.setdefault(segment.name or "", []).append(part)
                    segment, chunks = None, []
        parser.close()
    except MultipartError as exc:
        raise ApiError(400, "bad_request", f"malformed multipart body: {exc}") from None
    return form
