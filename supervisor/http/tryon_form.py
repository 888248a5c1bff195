"""Validation of a POST /tryon form, in the contract's order of precedence.

Pure functions over an already-read form (see `multipart_form`): 400 for a config that
is not a JSON object, then one 422 listing every field problem, then the images (415,
then the pixel limit as a 422).
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import msgspec

from supervisor.http.errors import ApiError, FieldProblem, validation_failed
from supervisor.http.images import ImageHeader, TooComplex, TooManyPixels, UnsupportedImage, read_header
from supervisor.jobs.job import JobOptions
from supervisor.http.multipart_form import Form

ID_FIELDS = ("job_id", "user_id", "session_id")
IMAGE_FIELDS = ("person_image", "garment_image")
PROVIDERS = ("qwen",)
MAX_CONFIG_BYTES = 16 * 1024
# Deeper JSON is refused before parsing: the parser recurses (RecursionError at a few
# thousand levels), and no valid config is deeper than 2.
MAX_CONFIG_DEPTH = 32
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


_OPTION_TYPES = {f.name: f.type for f in msgspec.structs.fields(JobOptions)}


class Submission(NamedTuple):
    job_id: str
    user_id: str
    session_id: str
    provider: str
    options: JobOptions
    person_image: bytes
    garment_image: bytes
    person_header: ImageHeader
    garment_header: ImageHeader


def validate(
    form: Form, max_pixels: int, max_side: int | None = None, steps: tuple[int, int] = (1, 100)
) -> Submission:
    """`steps`: the [min, max] a job's `steps` must lie within on this node (limits.steps)."""
    config = _parse_config(form)  # 400 comes before any 422
    problems: list[FieldProblem] = []
    texts = {name: _single_text(form, name, problems) for name in (*ID_FIELDS, "provider")}
    for name in ID_FIELDS:
        value = texts[name]
        if value is not None and not _ID.fullmatch(value):
            problems.append(
                FieldProblem(name, "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
            )
    provider = texts["provider"]
    if provider is not None and provider not in PROVIDERS:
        problems.append(FieldProblem("provider", f"must be one of: {', '.join(PROVIDERS)}"))
    options = _check_config(form, config, problems)
    _check_steps(options, steps, problems)
    images = {name: _single_file(form, name, problems) for name in IMAGE_FIELDS}
    if problems:
        raise validation_failed(problems)
    headers = _check_images(images, max_pixels, max_side)
    return Submission(
        job_id=texts["job_id"],  # type: ignore[arg-type]
        user_id=texts["user_id"],  # type: ignore[arg-type]
        session_id=texts["session_id"],  # type: ignore[arg-type]
        provider=provider,  # type: ignore[arg-type]
        options=options,
        person_image=images["person_image"],  # type: ignore[arg-type]
        garment_image=images["garment_image"],  # type: ignore[arg-type]
        person_header=headers["person_image"],
        garment_header=headers["garment_image"],
    )


def _parse_config(form: Form) -> dict[str, Any] | None:
    """The config as a dict; None when absent, or when its problem is a 422 (repeated,
    too large: `_check_config` reports it; a huge config is not parsed at all)."""
    parts = form.get("config")
    if not parts or len(parts) > 1 or parts[0].size > MAX_CONFIG_BYTES:
        return None
    raw = parts[0].data
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"config is not valid UTF-8 (byte {exc.start})") from None
    if json_depth(raw) > MAX_CONFIG_DEPTH:
        raise ApiError(400, "bad_request", f"config is nested deeper than {MAX_CONFIG_DEPTH} levels")
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_request", f"config is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "config must be a JSON object")
    return value


# A string's closing quote is optional: an unterminated one runs to the end in one match,
# where a required quote would rescan the rest from every quote inside it (quadratic).
_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.S)


def json_depth(raw: bytes) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings do not
    count), without parsing it. Malformed text gets a number too; the parser judges it."""
    depth = deepest = 0
    for match in _NESTING.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _check_config(form: Form, value: dict[str, Any] | None, problems: list[FieldProblem]) -> JobOptions:
    parts = form.get("config", [])
    if len(parts) > 1:
        problems.append(FieldProblem("config", "given more than once"))
    elif parts and parts[0].size > MAX_CONFIG_BYTES:
        problems.append(FieldProblem("config", f"over {MAX_CONFIG_BYTES} bytes"))
    if value is None:
        return JobOptions()
    before = len(problems)
    # Key by key, so every bad option is reported, not only the first.
    for key, item in value.items():
        field = f"config.{key}"
        if key not in _OPTION_TYPES:
            known = ", ".join(_OPTION_TYPES)
            problems.append(FieldProblem(field, f"unknown option (known: {known})"))
            continue
        try:
            msgspec.convert(item, _OPTION_TYPES[key])
        except msgspec.ValidationError as exc:
            problems.append(FieldProblem(field, str(exc).split(" - at ")[0]))
    if len(problems) > before:
        return JobOptions()
    return msgspec.convert(value, JobOptions)


def _check_steps(options: JobOptions, allowed: tuple[int, int], problems: list[FieldProblem]) -> None:
    """Within the node's limits.steps, besides the 1..100 every job is held to."""
    low, high = allowed
    if options.steps is not None and not low <= options.steps <= high:
        problems.append(FieldProblem(
            "config.steps", f"{options.steps} is outside the range this node allows: {low} to {high} (limits.steps)"
        ))


def _single(form: Form, name: str, problems: list[FieldProblem]) -> bytes | None:
    parts = form.get(name)
    if not parts:
        problems.append(FieldProblem(name, "required"))
        return None
    if len(parts) > 1:
        problems.append(FieldProblem(name, "given more than once"))
        return None
    return parts[0].data


def _single_text(form: Form, name: str, problems: list[FieldProblem]) -> str | None:
    data = _single(form, name, problems)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(FieldProblem(name, "not valid UTF-8"))
        return None


def _single_file(form: Form, name: str, problems: list[FieldProblem]) -> bytes | None:
    data = _single(form, name, problems)
    if data is not None and not data:
        problems.append(FieldProblem(name, "empty file"))
        return None
    return data


def _check_images(images: dict[str, bytes | None], max_pixels: int, max_side: int | None) -> dict[str, ImageHeader]:
    headers: dict[str, ImageHeader] = {}
    unsupported: list[str] = []
    too_big: list[FieldProblem] = []
    for name, data in images.items():
        assert data is not None
        try:
            headers[name] = read_header(data, max_pixels, max_side)
        except UnsupportedImage:
            unsupported.append(name)
        except (TooManyPixels, TooComplex) as exc:
            too_big.append(FieldProblem(name, str(exc)))
    if unsupported:
        raise ApiError(
            415,
            "unsupported_image",
            f"{', '.join(unsupported)}: not a JPEG, PNG or WebP image (judged from its bytes)",
        )
    if too_big:
        raise validation_failed(too_big)
    return headers
