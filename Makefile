# Set-up and entry points. `make test` and `make demo` install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install -q --disable-pip-version-check -c constraints.txt
MMCV_BUILD := MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 CFLAGS=-g0
PYTEST_ARGS ?=

.PHONY: install test demo demo-seg bench lint clean

install: $(STAMP)

# constraints.txt pins torch to the local 2.13.0 wheel, so no step can pull in
# another torch; mmcv is compiled with its CPU ops once (pip caches the wheel).
$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0 mmengine wheel setuptools numpy
	$(MMCV_BUILD) $(PIP) --no-build-isolation mmcv
	$(PIP) -e ".[tests]"
	$(BIN)/python -c "import torch, mmcv.ops, mmdet, mmseg, mmswin; \
	  assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) work_dirs data/toy
