"""The floor: a bare single-process Sanic app taking the same upload and answering 202,
with no auth, validation, scheduling or logging.

`/tryon` only receives the body (the HTTP stack's floor); `/tryon-form` also parses it with
Sanic's own multipart parser. What gpu-server adds is the difference."""

from __future__ import annotations

import sys

from sanic import Sanic, response

app = Sanic("floor", configure_logging=False)
app.config.update({"REQUEST_MAX_SIZE": 64 * 1024 * 1024, "MOTD": False, "ACCESS_LOG": False})


@app.post("/tryon")
async def tryon(request):
    return response.json({"status": "accepted", "bytes": len(request.body)}, status=202)


@app.post("/tryon-form")
async def tryon_form(request):
    files = request.files
    return response.json(
        {"status": "accepted", "job_id": request.form.get("job_id"), "images": len(files)}, status=202
    )


@app.get("/health")
async def health(request):
    return response.json({"status": "ok"})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), single_process=True, access_log=False, motd=False)
