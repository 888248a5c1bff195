"""The README and its docs tell one story: facts they state in several places agree."""

from __future__ import annotations

import re

from tests.support.node import REPO

README = (REPO / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in (REPO / "docs").glob("*.md")}
EVERYTHING = "\n".join([README, *DOCS.values()])


def section(text: str, heading: str) -> str:
    level = heading.split(" ", 1)[0]
    return text.split(f"\n{heading}\n", 1)[1].split(f"\n{level} ", 1)[0]


def test_one_duration_for_the_test_suite():
    durations = set(re.findall(r"about (\w+) minutes? on 2 cores", EVERYTHING))
    assert len(durations) == 1, durations


def test_the_readme_is_a_short_entry():
    assert len(README.splitlines()) < 400
    for heading in ("## Quick start", "## The API at a glance", "## Production on one GPU", "## Where to read next"):
        assert f"\n{heading}\n" in README, heading
    for page in DOCS:
        assert f"(docs/{page})" in README, page


def test_the_deploying_page_covers_the_three_paths():
    deploying = section(DOCS["deploying.md"], "## Deploying")
    for heading in (
        "### Container image", "### Kubernetes", "### systemd", "### Rolling updates", "### TLS and network placement",
    ):
        assert heading in deploying, heading


def test_the_readmes_gpu_steps_are_the_gpu_recipe_of_the_comfyui_page():
    """One recipe: every command of the README's production steps is in the ComfyUI page's."""
    steps = section(README, "## Production on one GPU")
    recipe = section(DOCS["comfyui.md"], "### Running the Qwen workflow on a GPU machine")
    commands = [line.strip() for block in re.findall(r"```sh\n(.*?)```", steps, re.S) for line in block.splitlines()]
    assert len(commands) > 10
    assert [c for c in commands if c not in recipe] == []


def test_every_model_file_has_a_download_command():
    recipe = section(DOCS["comfyui.md"], "### Running the Qwen workflow on a GPU machine")
    files = re.findall(r"^   \| `([^`]+\.safetensors)` \| `(\w+)/` \|", recipe, re.M)
    assert len(files) == 4
    for name, folder in files:
        command = rf"-o \$M/{folder}/{re.escape(name)} \\\n\s+https://huggingface\.co/\S+/resolve/main/\S*{re.escape(name)}\n"
        assert re.search(command, recipe), name


def test_the_pid_pattern_matches_what_make_run_starts():
    makefile = (REPO / "Makefile").read_text()
    config = re.search(r"^CONFIG \?= (\S+)$", makefile, re.M).group(1)
    recipe = re.search(r"^run: .*\n\t(.+)$", makefile, re.M).group(1)
    command_line = recipe.replace("$(BIN)", ".venv/bin").replace("$(CONFIG)", config)
    for pattern in re.findall(r"pgrep -f '([^']+)'", README):
        assert pattern in command_line, pattern


def test_the_laptop_torch_is_the_cpu_build_of_the_pinned_version():
    (pin,) = re.findall(r"^torch==(\S+)", (REPO / "constraints.txt").read_text(), re.M)
    assert f"pip install torch=={pin} --index-url https://download.pytorch.org/whl/cpu" in README
