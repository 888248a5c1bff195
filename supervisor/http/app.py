"""The HTTP surface: thin Sanic routes over the node's services.

Every answer is JSON (errors included, whatever went wrong); `/tryon` is a streaming
route so auth, readiness and a declared Content-Length are judged from the headers
before any of the body is read.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import unquote

from sanic import Request, Sanic
from sanic.exceptions import PayloadTooLarge, RequestCancelled, SanicException
from sanic.handlers import ErrorHandler
from sanic.response import HTTPResponse

from ipc.jsonlog import EventLog
from supervisor.http import jobs_api, openapi, status
from supervisor.http.auth import bearer_token
from supervisor.http.errors import STATUS_CODES, ApiError, error_response, json_response, unauthorized
from supervisor.http.multipart_form import boundary_of, read_form, too_large
from supervisor.http.tryon_form import IMAGE_FIELDS, validate

if TYPE_CHECKING:
    from supervisor.http.services import NodeServices

events = EventLog("supervisor.http")
_PARAM = re.compile(r"<([A-Za-z_]\w*)(?::[^>]*)?>")


def route_label(request: Request) -> str:
    """The route template (`/jobs/{job_id}`), never the raw path: bounded label values."""
    route = request.route
    if route is None:
        return "unmatched"
    return "/" + _PARAM.sub(r"{\1}", route.path).lstrip("/")


class JsonErrorHandler(ErrorHandler):
    """Whatever goes wrong, the client gets the contract's JSON error, never HTML or a traceback."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        node: NodeServices = request.app.ctx.node
        if isinstance(exception, ApiError):
            return error_response(exception, node.config.node_id)
        if isinstance(exception, RequestCancelled):
            # The client went away mid-request. Nothing can be answered, nothing went wrong
            # here: not an error, not a 5xx, not counted.
            request.ctx.aborted = True
            _log_abort(request, "the client went away")
            return HTTPResponse(status=499)  # never sent: the connection is gone
        if isinstance(exception, asyncio.CancelledError):
            # Cancelled by the node itself: it is stopping.
            _log_abort(request, "the node is stopping")
            error = ApiError(503, "not_ready", "the node is stopping", headers={"Retry-After": "60"})
            return error_response(error, node.config.node_id)
        if isinstance(exception, SanicException):
            code = exception.status_code
            # Sanic's own headers go along: `Allow` on a 405 (RFC 9110), say.
            headers = {str(k): str(v) for k, v in (exception.headers or {}).items()}
            if code == 405 and "Allow" not in headers:
                headers["Allow"] = ", ".join(_allowed_methods(request))  # Sanic omits it on a dynamic path
            message = str(exception) or "request refused"
            error = ApiError(code, STATUS_CODES.get(code, "http_error"), message, headers=headers)
            return error_response(error, node.config.node_id)
        events.exception("internal_error", route=route_label(request), method=request.method)
        error = ApiError(500, "internal_error", "the node failed to answer this request; see its logs")
        return error_response(error, node.config.node_id)


def create_app(node: NodeServices) -> Sanic:
    app = Sanic("gpu_server", configure_logging=False, error_handler=JsonErrorHandler())
    app.ctx.node = node
    # Handlers read `node.config` each time: a reload (SIGHUP) replaces it.
    app.config.update(
        {
            "REQUEST_MAX_SIZE": node.config.server.max_body_bytes,
            # Total deadlines, enforced by supervisor.http.deadlines (the server's protocol).
            "HEADER_TIMEOUT": node.config.server.header_timeout_s,
            "BODY_TIMEOUT": node.config.server.body_timeout_s,
            "ACCESS_LOG": False,
            "MOTD": False,
            "NOISY_EXCEPTIONS": False,
            "FALLBACK_ERROR_FORMAT": "json",
        }
    )

    @app.on_request
    async def start_timer(request: Request) -> None:
        request.ctx.started = time.perf_counter()

    @app.on_request
    async def no_body_on_a_read(request: Request) -> None:
        # A GET or HEAD has no use for a body: refused from its headers (Sanic would leave it
        # unread and log an ERROR for each such request, which is any client's to send).
        if request.method not in ("GET", "HEAD") or request.route is None:
            return  # (no route: its 404 or 405 says more, and answers no 2xx over an unread body)
        if request.headers.get("transfer-encoding") is not None or (_content_length(request) or 0) > 0:
            if request.stream is not None:
                request.stream.keep_alive = False  # the body is not read: no next request after it
            raise ApiError(400, "bad_request", f"a {request.method} request takes no body")
        if request.stream is not None and request.stream.request_body:
            await _discard_body(request)  # `Content-Length: 0`: an empty body, read as such

    @app.on_response
    async def record_request(request: Request, response: HTTPResponse) -> None:
        started = getattr(request.ctx, "started", None)
        if started is not None and not getattr(request.ctx, "aborted", False):
            node.metrics.observe_request(route_label(request), response.status, time.perf_counter() - started)

    def require_auth(request: Request) -> None:
        if not node.tokens.accepts(_single_header(request, "x-internal-auth")):
            raise unauthorized()

    @app.post("/tryon", stream=True)
    async def tryon(request: Request) -> HTTPResponse:
        cfg = node.config
        length = _content_length(request)
        events.info("request_received", route="/tryon", content_length=length)
        # Sanic lifts the size limit of a streaming route; put it back, so that a chunk
        # size over the limit is refused as soon as its size line is read.
        request.stream.request_max_size = cfg.server.max_body_bytes
        try:
            require_auth(request)
            node.admission.require_ready()
            if length is not None and length > cfg.server.max_body_bytes:
                raise too_large("the request body", cfg.server.max_body_bytes)
            boundary = boundary_of(request.headers.get("content-type"))
            try:
                form = await read_form(
                    request.stream.read,
                    boundary,
                    length,
                    cfg.server.max_body_bytes,
                    {name: cfg.images.max_bytes for name in IMAGE_FIELDS},
                )
            except PayloadTooLarge:
                # Sanic's own count, against the limit set above: a chunk size over it.
                raise too_large("the request body", cfg.server.max_body_bytes) from None
            submission = validate(form, cfg.images.max_pixels, cfg.images.max_side, cfg.limits.steps)
            events.info("validation_passed", job_id=submission.job_id)
            job, position = node.admission.admit(submission)
        except ApiError as error:
            _log_refusal(error)
            return error_response(error, cfg.node_id)
        return json_response(
            {"status": "accepted", "job_id": job.job_id, "node_id": cfg.node_id, "queue_position": position},
            202,
        )

    @app.get("/gpu/status")
    async def gpu_status(request: Request) -> HTTPResponse:
        require_auth(request)
        # NVML calls block in C; a thread keeps the event loop answering meanwhile.
        gpus = await asyncio.to_thread(node.nvml.read, node.worker_gpus())
        return json_response(status.gpu_status_body(node, gpus))

    # Sanic hands path parameters over as they came, percent-encoded: `/jobs/a%3Ab` is job `a:b`.
    @app.get("/jobs/<job_id>")
    async def get_job(request: Request, job_id: str) -> HTTPResponse:
        require_auth(request)
        return json_response(jobs_api.describe(node.jobs_api.find(unquote(job_id, errors="replace"))))

    # No body is read before the handler: Sanic's default for DELETE would buffer up to
    # server.max_body_bytes of one, for anyone, before the token is checked.
    @app.delete("/jobs/<job_id>", ignore_body=True)
    async def cancel_job(request: Request, job_id: str) -> HTTPResponse:
        require_auth(request)
        await _discard_body(request)
        job = await node.jobs_api.cancel(unquote(job_id, errors="replace"))
        return json_response(jobs_api.describe(job), 202)

    @app.get("/health")
    async def health(request: Request) -> HTTPResponse:
        state = node.readiness()
        return json_response(status.health_body(node, state), 200 if state == "ok" else 503)

    @app.get("/health/live")
    async def live(request: Request) -> HTTPResponse:
        return json_response({"status": "ok", "node_id": node.config.node_id})

    @app.get("/version")
    async def version(request: Request) -> HTTPResponse:
        return json_response(status.version_body(node))

    @app.get("/metrics")
    async def metrics(request: Request) -> HTTPResponse:
        if node.config.metrics.token is not None:
            presented = bearer_token(_single_header(request, "authorization"))
            if presented is None or not node.metrics_tokens.accepts(presented):
                raise ApiError(401, "unauthorized", "missing or invalid bearer token for /metrics")
        # Off the event loop: the GPU collector calls NVML, which blocks in C.
        body, content_type = await asyncio.to_thread(node.metrics.exposition)
        return HTTPResponse(body, content_type=content_type)

    @app.get("/openapi.json")
    async def openapi_schema(request: Request) -> HTTPResponse:
        return HTTPResponse(openapi.schema_json(), content_type="application/json")

    return app


def declare_http1_only(app: Sanic, port: int) -> None:
    """Before `server.startup()`: Sanic sets an empty `alt-svc` header on every answer
    unless it knows at start-up that the server speaks HTTP/1 only (its start-up rewrite
    then drops the header). `create_server` does not tell it; this does."""
    from sanic.application.state import ApplicationServerInfo
    from sanic.http.constants import HTTP

    app.state.server_info.append(ApplicationServerInfo(settings={"version": HTTP.VERSION_1, "port": port}))


def _log_abort(request: Request, why: str) -> None:
    events.info("request_aborted", route=route_label(request), method=request.method, why=why)


def _allowed_methods(request: Request) -> list[str]:
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        try:
            request.app.router.get(request.path, method, None)
        except SanicException:
            continue
        allowed.append(method)
    return allowed


async def _discard_body(request: Request) -> None:
    """Read a body the route has no use for and drop it, a chunk at a time (within
    server.max_body_bytes and server.body_timeout_s, as any body), so that the answer does
    not leave it unread (which Sanic would log as an error)."""
    stream = request.stream
    while stream is not None and stream.request_body and await stream.read() is not None:
        pass


def _single_header(request: Request, name: str) -> str | None:
    """The header's value when given exactly once. Twice is refused whatever the values:
    proxies and frameworks disagree on which one wins."""
    values = request.headers.getall(name, [])
    return values[0] if len(values) == 1 else None


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    # Sanic already refused a malformed Content-Length with 400.
    return int(value) if value is not None else None


def _log_refusal(error: ApiError) -> None:
    if error.status == 429:
        return  # logged as job_rejected_busy where it was decided
    if error.status == 401:
        events.warning("request_unauthorized", route="/tryon")
    elif error.status == 503:
        events.info("request_not_ready", route="/tryon", message=error.message)
    else:
        details = [d._asdict() for d in error.details] if error.details else None
        events.info(
            "validation_failed", route="/tryon", status=error.status, error=error.code,
            message=error.message, details=details,
        )
