"""The docs stay true to the code: every config key and every route documented, every link
and anchor resolving, each page's contents list its headings, commands that run as pasted."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import msgspec
import pytest
import yaml

from supervisor.config.sections import Config
from tests.support.config_text import MINIMAL
from tests.support.node import REPO

DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [REPO / "README.md", *PAGES]
SPEC = REPO / "supervisor" / "http" / "openapi.yaml"
HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$", re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def prose(markdown: str) -> str:
    """The text outside code blocks (a `#` in a shell comment is no heading)."""
    return FENCE.sub("", markdown)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    plain = re.sub(r"[`*]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", plain).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(title) for _, title in HEADING.findall(prose(text(path)))}


def config_keys(struct: type[msgspec.Struct] = Config, prefix: str = "") -> list[str]:
    """Every key of the config file, from its structs (a section's keys under its name)."""
    keys = []
    for field in msgspec.structs.fields(struct):
        key = f"{prefix}{field.encode_name}"
        inner = field.type
        if typing.get_origin(inner) is typing.Annotated:
            inner = typing.get_args(inner)[0]
        if isinstance(inner, type) and issubclass(inner, msgspec.Struct):
            keys += config_keys(inner, key + ".")
        else:
            keys.append(key)
    return keys


def test_there_are_pages_by_task():
    assert {p.stem for p in PAGES} >= {
        "api", "operating", "configuration", "comfyui", "deploying", "security", "observability",
        "development", "benchmarks",
    }


def test_every_config_key_is_in_the_configuration_page():
    from comfyui_config.settings import ComfyUISettings

    page = text(DOCS / "configuration.md")
    # model.comfyui is a mapping the backend's own struct reads: its keys too.
    keys = config_keys() + [f"model.comfyui.{f.encode_name}" for f in msgspec.structs.fields(ComfyUISettings)]
    assert len(keys) > 40 and "spool.rescan_s" in keys and "logging.level" in keys
    missing = [k for k in keys if f"`{k}`" not in page and not re.search(rf"`{re.escape(k)}` / ", page)
               and f"/ `{k.rsplit('.', 1)[-1]}`" not in page]
    assert missing == []


def test_every_route_is_in_the_api_page():
    page = text(DOCS / "api.md")
    spec = yaml.safe_load(text(SPEC))
    routes = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops if method != "parameters"]
    assert len(routes) >= 9
    missing = [f"{m} {p}" for m, p in routes if f"`{m} {p}`" not in page]
    assert missing == []


def test_the_api_page_names_what_the_served_app_routes():
    from types import SimpleNamespace

    from sanic import Sanic

    from supervisor import config as config_module
    from supervisor.http.app import create_app

    app = create_app(SimpleNamespace(config=config_module.parse(MINIMAL, {})))
    Sanic.unregister_app(app)  # one app of the name per process: others build theirs
    page = text(DOCS / "api.md")
    assert len(app.router.routes) >= 8
    for route in app.router.routes:
        path_ = "/" + route.path.lstrip("/")
        path_ = re.sub(r"<(\w+)(:[^>]*)?>", r"{\1}", path_)
        for method in route.methods - {"HEAD", "OPTIONS"}:
            assert f"`{method} {path_}`" in page, (method, path_)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_every_local_link_and_anchor_resolves(path):
    broken = []
    for target in LINK.findall(prose(text(path))):
        if re.match(r"^[a-z]+:", target):
            continue  # https://, mailto:
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_each_page_has_a_contents_list_of_its_sections(path):
    body = text(path)
    assert body.startswith("# ")
    contents = body.split("**Contents**", 1)
    assert len(contents) == 2, "no contents list"
    listed = [m for m in re.findall(r"\]\(#([^)]+)\)", contents[1].split("\n\n", 2)[1])]
    headings = [slug(t) for level, t in HEADING.findall(prose(body)) if len(level) in (2, 3)]
    assert listed == headings


SHELL_BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.M | re.S)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.name)
def test_commands_name_the_venv_not_a_bare_python_or_gpu_server(path):
    # Pasted into a fresh shell, a bare `python` or `gpu-server` is not the project's.
    bare = []
    for block in SHELL_BLOCK.findall(text(path)):
        bare += [line for line in block.splitlines() if re.match(r"\s*(python|gpu-server)(\s|$)", line)]
    bare += re.findall(r"`python [^`]*\.py[^`]*`", prose(text(path)))  # a script to run
    assert bare == []
