# Set-up and entry points. `make test` and `make demo` install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip install -q --disable-pip-version-check -c constraints.txt
MMCV_BUILD := MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 CFLAGS=-g0
PYTEST_ARGS ?=
# Idle OpenMP threads sleep instead of spinning: with two cores shared by
# several processes (DDP tests, data workers) spinning is many times slower.
export OMP_WAIT_POLICY ?= PASSIVE

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
	env -u OMP_WAIT_POLICY $(BIN)/python benchmarks/run_all.py

# Detection quickstart (demo/toy_det_demo.py): toy COCO shapes -> trains the
# toy Swin Mask R-CNN with tools/train.py -> tools/test.py on val (prints bbox
# and segm mAP, draws every val prediction into work_dirs/demo/predictions)
# -> loss curves in work_dirs/demo/loss_curve.png.
demo: install
	$(BIN)/python demo/toy_det_demo.py --work-dir work_dirs/demo

# Segmentation quickstart, minutes on 2 CPU cores: toy ADE20K-format shapes
# (data/toy/ade), a small UperNet + Swin trained by tools/train.py, mIoU by
# tools/test.py, and one picture per validation image (ground truth |
# prediction, coloured over the input) in work_dirs/toy_seg/vis.
SEG_TOY := configs/toy/upernet_swin-toy_toy-ade.py
SEG_WORK := work_dirs/toy_seg

demo-seg: install
	$(BIN)/python tools/misc/make_toy_data.py --out data/toy --kind ade
	$(BIN)/python tools/train.py $(SEG_TOY) \
	  --work-dir $(SEG_WORK)
	$(BIN)/python tools/test.py $(SEG_TOY) \
	  $$(cat $(SEG_WORK)/last_checkpoint) --work-dir $(SEG_WORK) \
	  --show-dir $(abspath $(SEG_WORK))/vis

clean:
	rm -rf $(VENV) work_dirs data/toy
