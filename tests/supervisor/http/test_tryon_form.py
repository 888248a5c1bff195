from __future__ import annotations

import json

import pytest

from supervisor.http.errors import ApiError
from supervisor.http.multipart_form import FormPart
from supervisor.jobs.job import JobOptions
from supervisor.http.tryon_form import json_depth, validate
from tests.support import images

PERSON = images.person(64, 80)
GARMENT = images.garment(32, 40)


def form(**fields) -> dict[str, list[FormPart]]:
    base = {
        "job_id": b"job-1", "user_id": b"u.1", "session_id": b"s:1", "provider": b"qwen",
        "person_image": PERSON, "garment_image": GARMENT,
    }
    base.update(fields)
    out: dict[str, list[FormPart]] = {}
    for name, value in base.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        raw = [v if isinstance(v, bytes) else json.dumps(v).encode() for v in values]
        out[name] = [FormPart(None, data, len(data)) for data in raw]
    return out


def error_of(f, max_pixels: int = 36_000_000) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validate(f, max_pixels)
    return caught.value


def test_a_valid_form():
    submission = validate(form(config={"seed": 3, "steps": 10, "prompt": "red", "output_format": "webp"}), 10**8)
    assert submission.job_id == "job-1" and submission.user_id == "u.1" and submission.session_id == "s:1"
    assert submission.options == JobOptions(seed=3, steps=10, prompt="red", output_format="webp")
    assert submission.person_header.format == "JPEG" and submission.person_header.width == 64
    assert submission.garment_header.format == "PNG"
    assert submission.person_image == PERSON


def test_config_is_optional_and_its_keys_too():
    assert validate(form(), 10**8).options == JobOptions()
    assert validate(form(config={}), 10**8).options == JobOptions()
    assert validate(form(config={"seed": None}), 10**8).options == JobOptions()


@pytest.mark.parametrize("value", [b"{", b"[]", b"3", b"\xff\xfe"])
def test_config_that_is_not_a_json_object_is_400(value):
    assert error_of(form(config=value)).status == 400


def test_400_wins_over_422():
    assert error_of(form(config=b"nope", provider=None)).status == 400


def test_every_problem_in_one_422():
    error = error_of(
        form(job_id=b"a b", user_id=None, provider=b"dalle", session_id=[b"s1", b"s2"],
             config={"steps": 101, "seed": True, "colour": "red"}, garment_image=b"")
    )
    assert error.status == 422 and error.code == "validation_failed"
    assert {d.field for d in error.details} == {
        "job_id", "user_id", "provider", "session_id", "config.steps", "config.seed", "config.colour", "garment_image",
    }
    by_field = {d.field: d.message for d in error.details}
    assert by_field["session_id"] == "given more than once"
    assert by_field["user_id"] == "required"
    assert "unknown option" in by_field["config.colour"]


@pytest.mark.parametrize("job_id", [b"", b"x" * 129, b"a/b", b"caf\xc3\xa9", b"tab\tid", b"\xff"])
def test_ids_outside_the_alphabet_or_length(job_id):
    error = error_of(form(job_id=job_id))
    assert [d.field for d in error.details] == ["job_id"]


def test_ids_at_the_edges_are_fine():
    assert validate(form(job_id=b"x" * 128), 10**8).job_id == "x" * 128
    assert validate(form(job_id=b"A-z_0.9:"), 10**8).job_id == "A-z_0.9:"


def test_config_over_16_kib_is_422():
    error = error_of(form(config={"prompt": "x" * 17000}))
    assert [d.field for d in error.details] == ["config"]


def test_unsupported_bytes_are_415_after_field_checks():
    assert error_of(form(person_image=b"GIF89a....")).status == 415
    assert error_of(form(person_image=b"GIF89a....", provider=b"x")).status == 422


def test_pixel_limit_is_a_422_on_the_image_field():
    error = error_of(form(garment_image=images.png_claiming(100, 100)), max_pixels=9_999)
    assert error.status == 422 and [d.field for d in error.details] == ["garment_image"]


def test_415_wins_over_the_pixel_limit():
    error = error_of(form(person_image=b"text", garment_image=images.png_claiming(30000, 30000)))
    assert error.status == 415


def test_a_repeated_config_is_a_422_not_silently_the_first():
    error = error_of(form(config=[{"seed": 1}, {"seed": 2}]))
    assert [(d.field, d.message) for d in error.details] == [("config", "given more than once")]


def test_a_config_too_large_is_judged_by_its_size_without_parsing_it():
    f = form()
    f["config"] = [FormPart(None, b"{not even json" * 10, size=5_000_000)]  # truncated while read
    error = error_of(f)
    assert error.status == 422 and [d.field for d in error.details] == ["config"]


@pytest.mark.parametrize(
    "text, depth",
    [("{}", 1), ("[]", 1), ("1", 0), ('{"a": [1, {"b": 2}]}', 3), ('{"a": "[[[{{{"}', 1),
     ('{"a": "\\\\"}', 1), ('{"a": "\\"[["}', 1), ("[" * 5000, 5000)],
)
def test_json_depth_counts_nesting_outside_strings(text, depth):
    assert json_depth(text.encode()) == depth


def test_an_unterminated_string_runs_to_the_end_in_one_scan():
    # Its brackets are string content, and the scan does not start again at each quote
    # inside it (that was one pass over the rest per quote: a 16 KiB config of escaped
    # quotes held the event loop for most of a second).
    assert json_depth(b'{"a": "[[[[') == 1
    assert json_depth(b'"' + b'\\"' * 8000 + b"[") == 0


@pytest.mark.parametrize(
    "config",
    [b"[" * 8000 + b"]" * 8000, b'{"a":' * 33 + b"1" + b"}" * 33, b'{"prompt": "caf\xe9"}', b"\xff"],
    ids=["8000-deep", "33-deep", "latin-1", "not-utf-8"],
)
def test_config_too_deep_or_not_utf8_is_a_400(config):
    with pytest.raises(ApiError) as caught:
        validate(form(config=config), 10**8)
    assert caught.value.status == 400 and caught.value.code == "bad_request"


def test_config_32_deep_is_parsed_and_judged_by_its_keys():
    with pytest.raises(ApiError) as caught:
        validate(form(config=b'{"a":' * 31 + b"{}" + b"}" * 31), 10**8)
    assert caught.value.status == 422 and [d.field for d in caught.value.details] == ["config.a"]


def test_a_side_over_max_side_is_a_422_naming_the_image():
    with pytest.raises(ApiError) as caught:
        validate(form(garment_image=images.png_claiming(20000, 2)), 10**8, max_side=16383)
    assert caught.value.status == 422 and [d.field for d in caught.value.details] == ["garment_image"]


def test_steps_outside_the_nodes_limits_are_a_422_naming_the_allowed_range():
    error = error_of_steps(form(config={"steps": 8}), (4, 4))
    assert (error.status, error.code) == (422, "validation_failed")
    (detail,) = error.details
    assert detail.field == "config.steps"
    assert detail.message == "8 is outside the range this node allows: 4 to 4 (limits.steps)"


@pytest.mark.parametrize("steps", [1, 3, 9, 100])
def test_each_side_of_the_step_limits_is_outside_them(steps):
    assert error_of_steps(form(config={"steps": steps}), (4, 8)).details[0].field == "config.steps"


@pytest.mark.parametrize("steps", [4, 6, 8])
def test_steps_within_the_limits_inclusive_are_accepted(steps):
    assert validate(form(config={"steps": steps}), 10**8, steps=(4, 8)).options.steps == steps


def test_a_job_naming_no_steps_is_not_held_to_the_limits():
    # It runs the workflow's own count (which the operator chose with the limits).
    assert validate(form(config={"seed": 1}), 10**8, steps=(4, 4)).options.steps is None


def test_a_step_limit_problem_is_listed_with_the_other_field_problems():
    error = error_of_steps(form(config={"steps": 50}, provider=b"dalle"), (4, 4))
    assert {d.field for d in error.details} == {"config.steps", "provider"}


def test_steps_outside_1_to_100_are_reported_once_whatever_the_limits():
    error = error_of_steps(form(config={"steps": 101}), (4, 4))
    (detail,) = error.details
    assert detail.field == "config.steps" and detail.message == "Expected `int` <= 100"


def error_of_steps(f, steps: tuple[int, int]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validate(f, 36_000_000, steps=steps)
    return caught.value
