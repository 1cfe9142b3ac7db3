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

.PHONY: install test demo demo-seg export-demo bench lint clean gpu-check docs

install: $(STAMP)

# constraints.txt pins torch to the local 2.13.0 wheel, so no step can pull in
# another torch; mmcv is compiled with its CPU ops once (pip caches the wheel).
# That stack cannot use a GPU: where nvidia-smi sees one, stop and say what to
# run instead (the `+` runs this check under `make -n` too), unless
# CPU_ONLY=1 asks for the CPU stack anyway.
CPU_ONLY ?=
$(STAMP): setup.py constraints.txt
	+@if [ "$(CPU_ONLY)" != 1 ] && nvidia-smi -L >/dev/null 2>&1; then \
	  echo 'make install: nvidia-smi sees a GPU, but this target builds a' \
	    'CPU-only stack (CPU torch, mmcv without CUDA ops).' >&2; \
	  echo 'For the GPU, install into an environment with CUDA torch' \
	    '(docs/en/get_started.md: "Install into an existing environment (GPU)"):' >&2; \
	  echo '  pip install -U openmim && mim install "mmcv>=2.0.0,<2.2.0"' >&2; \
	  echo '  pip install -e ".[openmmlab]"' >&2; \
	  echo 'For the CPU-only stack anyway: make install CPU_ONLY=1' >&2; \
	  exit 1; \
	fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0 mmengine wheel setuptools numpy
	$(MMCV_BUILD) $(PIP) --no-build-isolation mmcv
	$(PIP) -e ".[openmmlab,tests,deploy,docs]"
	$(BIN)/python -c "import torch, mmcv.ops, mmdet, mmseg, mmswin; \
	  assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

bench: install
	env -u OMP_WAIT_POLICY $(BIN)/python benchmarks/run_all.py

# The documentation site (docs/en/, mkdocs.yml) into work_dirs/site/, in
# strict mode: a broken link or anchor, or a page missing from the nav,
# fails the build (tests/test_docs_build.py builds it the same way).
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

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

# Deployment quickstart (tools/deployment/export_demo.py): exports the toy
# detector and segmentor of `make demo` / `make demo-seg` (trained first if
# absent) to ONNX with dynamic sizes, runs ONNX Runtime on their val images
# and draws its predictions beside PyTorch's in work_dirs/export_demo/{det,seg},
# then ends with one table: val metrics and latency of PyTorch, ONNX Runtime,
# OpenVINO fp32 / bf16 and the int8 model of tools/deployment/quantize.py.
export-demo: install
	test -f work_dirs/demo/last_checkpoint || $(MAKE) demo
	test -f $(SEG_WORK)/last_checkpoint || $(MAKE) demo-seg
	$(BIN)/python tools/deployment/export_demo.py --out work_dirs/export_demo \
	  --det-work-dir work_dirs/demo --seg-work-dir $(SEG_WORK)

# The CUDA checks in one command, under 10 minutes on one GPU: the tests that
# take the `device` fixture (parity, gradients, fp16/bf16 autocast, export)
# with --device cuda, the quick benchmarks on CUDA, and one summary file,
# $(GPU_CHECK_OUT)/summary.md. Without CUDA it says so and exits 0. Runs
# with GPU_PYTHON, by default the active `python` if it has torch, else .venv.
GPU_PYTHON ?=
GPU_CHECK_OUT ?= work_dirs/gpu_check
gpu-check:
	@py="$(GPU_PYTHON)"; [ -n "$$py" ] || py=$$(bash tools/find_python.sh) \
	  && "$$py" tools/misc/gpu_check.py --out $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) work_dirs data/toy
