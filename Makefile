# Fresh-machine entry points: `make demo` and `make test` install what they need (Debian packages from
# tools/setup/packages.txt, then .venv with the project), then run. `make demo` needs only the `demo` group.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hgen-installed
EXTRAS ?= edge,compiler,hub,dev
# The shared data folder beside the checkout holds the MNIST test set; FashionMNIST comes from Debian's package.
SHARED_DATA := $(abspath ../shared/data)
export HGEN_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)
export PYTHONUNBUFFERED := 1
SYSTEM := bash tools/setup/install-system-packages.sh

.PHONY: demo demo-same-field test test-unit test-integration venv clean system-test android-bridge

system-test:
	$(SYSTEM) test

# --build-constraint: the isolated build env's grpcio-tools (which writes the gRPC stubs) is the pinned one too;
# a newer one writes stubs that refuse to import under the pinned grpcio.
$(STAMP): setup.py pyproject.toml constraints.txt $(wildcard protos/*.proto)
	$(SYSTEM) demo
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq -c constraints.txt --upgrade pip
	$(PY) -m pip install -qq -c constraints.txt --build-constraint constraints.txt -e '.[$(EXTRAS)]'
	touch $@

venv: $(STAMP)

# The main job (issue 18): compiled on clean images, deployed into a harder field (sensor noise) that people teach it.
demo: $(STAMP)
	$(PY) -m hgen.compiler.cli.main demo --dataset auto --field noise --audit-share 0.05 --out build/demo

# `hgen demo`'s default: compiled, streamed and evaluated on the same low-resolution images (no field shift).
demo-same-field: $(STAMP)
	$(PY) -m hgen.compiler.cli.main demo --out build/demo-same-field

# The phone app (android_bridge/): npm ci from the committed lock file, then the build the tests serve and run.
BRIDGE_BUILT := android_bridge/dist/.built
$(BRIDGE_BUILT): android_bridge/package-lock.json android_bridge/build.mjs android_bridge/tsconfig.json \
		$(wildcard android_bridge/src/*.ts android_bridge/test/*.ts android_bridge/static/*) protos/hub.proto
	cd android_bridge && npm ci --no-audit --no-fund && npm run build
	touch $@

android-bridge: system-test $(BRIDGE_BUILT)

# pytest-xdist workers (2 by default since three green runs in a row on an idle 2-core machine, 9.6-10.3 min each
# vs 16 in one process; `make test TEST_WORKERS=0` runs one process). --dist loadfile keeps a module on one worker,
# so its module-scoped fixtures are built once.
TEST_WORKERS ?= 2
XDIST := $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile,)

test: system-test $(STAMP) $(BRIDGE_BUILT)
	$(PY) -m pytest -q --timeout=900 --durations=25 $(XDIST) tests

test-unit: $(STAMP)
	$(PY) -m pytest -q -m unit tests

test-integration: system-test $(STAMP) $(BRIDGE_BUILT)
	$(PY) -m pytest -q -m integration tests

clean:
	rm -rf build .pytest_cache
