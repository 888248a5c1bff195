"""Admission: readiness, duplicates, the busy check and what an accepted job looks like."""

from __future__ import annotations

import logging

import pytest

from supervisor import config
from supervisor.jobs.admission import Admission
from supervisor.http.errors import ApiError
from supervisor.http.images import ImageHeader
from supervisor.jobs.job import JobOptions, JobState, JobStore
from supervisor.metrics.registry import Metrics
from supervisor.jobs.scheduler import Scheduler
from supervisor.http.tryon_form import Submission

CONFIG = """
node_id: n
auth: {tokens: ["0123456789abcdef"]}
callback: {url: "http://127.0.0.1:9/c", token: t}
images: {output_format: webp}
"""
HEADER = ImageHeader("PNG", 64, 48)
TURNED = ImageHeader("JPEG", 80, 60, orientation=6)  # a portrait photo, stored on its side


def submission(job_id: str, **options) -> Submission:
    return Submission(job_id, "u", "s", "qwen", JobOptions(**options), b"person", b"garment", TURNED, HEADER)


class Node:
    """What admission leans on: the node's state, and a record of the dispatcher's wake-ups."""

    def __init__(self, max_pending: int = 0, spooled: tuple[str, ...] = ()) -> None:
        self.status = "ok"
        self.woken = 0
        self.jobs = JobStore(retention_s=3600)
        self.scheduler = Scheduler(max_pending)
        self.metrics = Metrics()
        self.admission = Admission(
            config.parse(CONFIG, {}), self.jobs, self.scheduler, self.metrics,
            readiness=lambda: self.status, on_admitted=self.wake, in_spool=lambda job_id: job_id in spooled,
        )

    def wake(self) -> None:
        self.woken += 1

    def count(self, outcome: str) -> float:
        return self.metrics.jobs.labels(outcome)._value.get()


def refusal(call) -> ApiError:
    with pytest.raises(ApiError) as error:
        call()
    return error.value


def test_an_accepted_job_is_stored_counted_and_handed_on_with_its_options_resolved():
    node = Node()
    job, position = node.admission.admit(submission("j1", steps=4))
    assert position == 0 and node.scheduler.current is job and node.jobs.get("j1") is job
    assert job.state is JobState.QUEUED and node.woken == 1 and node.count("accepted") == 1
    assert job.options.steps == 4 and job.options.output_format == "webp"  # the config's default
    assert isinstance(job.options.seed, int)  # drawn now, so the run is reproducible from the log


def test_the_output_size_is_resolved_from_the_config_in_force_at_acceptance(caplog):
    node = Node(max_pending=1)
    with caplog.at_level(logging.INFO):
        job, _ = node.admission.admit(submission("j1"))
    assert job.output_size == "person"  # images.output_size's default
    node.admission.config = config.parse(CONFIG.replace("output_format: webp", "output_size: model"), {})
    later, _ = node.admission.admit(submission("j2"))
    assert (job.output_size, later.output_size) == ("person", "model")  # a reload changes later jobs only
    (accepted,) = [r.fields for r in caplog.records
                   if getattr(r, "event", None) == "job_accepted" and r.fields["job_id"] == "j1"]
    assert accepted["output_size"] == "person"
    # Sizes as stored in the file, and the orientation the worker will undo.
    assert accepted["person_image"] == {"format": "JPEG", "width": 80, "height": 60, "orientation": 6, "bytes": 6}


def test_a_given_seed_and_format_are_kept():
    node = Node()
    job, _ = node.admission.admit(submission("j1", seed=7, output_format="png"))
    assert (job.options.seed, job.options.output_format) == (7, "png")


@pytest.mark.parametrize("status, retry_after", [("loading", "5"), ("restarting", "5"), ("failed", "60"),
                                                 ("draining", "60")])
def test_a_node_that_cannot_take_jobs_answers_503_with_retry_after(status, retry_after):
    node = Node()
    node.status = status
    error = refusal(node.admission.require_ready)
    assert (error.status, error.code, error.headers["Retry-After"]) == (503, "not_ready", retry_after)
    assert status in error.message
    # Checked again when the body is in: the worker may have died meanwhile. No trace is left.
    assert refusal(lambda: node.admission.admit(submission("late"))).status == 503
    assert node.jobs.get("late") is None and node.scheduler.current is None and node.woken == 0


def test_a_known_job_id_is_a_409_also_one_whose_result_waits_in_the_spool():
    node = Node(max_pending=5, spooled=("from-before",))
    node.admission.admit(submission("j1"))
    for job_id in ("j1", "from-before"):
        error = refusal(lambda: node.admission.admit(submission(job_id)))
        assert (error.status, error.code) == (409, "duplicate_job") and job_id in error.message
    assert node.count("accepted") == 1


def test_a_full_node_answers_429_with_retry_after_and_leaves_no_trace():
    node = Node(max_pending=1)
    assert node.admission.admit(submission("runs"))[1] == 0
    assert node.admission.admit(submission("waits"))[1] == 1
    error = refusal(lambda: node.admission.admit(submission("refused")))
    assert (error.status, error.code, error.headers["Retry-After"]) == (429, "gpu_busy", "1")
    assert node.jobs.get("refused") is None and node.count("rejected_busy") == 1
    assert node.scheduler.queue_length == 1 and node.woken == 2
    # The 429 left nothing behind: once there is room, the same job_id is welcome.
    node.scheduler.finish(node.scheduler.current, held_s=2.0)
    assert node.admission.admit(submission("refused"))[1] == 1
