#!/usr/bin/env bash
# Re-measure, in a quiet window, the summary table of
# docs/en/advanced_guides/performance.md ("what (Swin-T, fp32, CPU)") and
# the allocator comparison of docs/en/user_guides/deploy.md, each figure
# over 3 fresh processes (median and min-max, the 4096^3 matmul's GFLOP/s
# of the same runs beside it).
#
#   bash benchmarks/remeasure_summary.sh [summary|allocators|all]
#
# Estimated durations on the quiet 2-core AMD EPYC (each step's quiet
# per-repeat times from performance.md plus its start-up, from 1-repeat
# trials on the loaded machine, scaled by the matmul's slow-down there):
# summary (default, ~19 min, 16-23):
#   1. backbone forward 2x3x512x512 and 8x3x224x224: mmswin, mmdet, HF
#      (~3 min)
#   2. backbone forward 1x3x1600x2688: mmswin, mmdet, HF (~5 min)
#   3. train step 1x3x800x1344 and 2x3x512x512, with and without with_cp,
#      peak memory (~7.5 min)
#   4. Mask R-CNN (800x1333) and UperNet (512x512) whole-model inference
#      (~3.5 min)
# allocators (~4.5 min): Swin-T + FPN at 1x3x800x1344, PyTorch fp32/bf16
#   and OpenVINO f32/int8, glibc and tcmalloc side by side, 3 processes
#   each (needs Debian's libtcmalloc-minimal4 and the cached exports in
#   work_dirs/deploy_latency/, else the first run exports, ~3 min more).
#
# Each step writes benchmarks/results/remeasure_<step>.json (every run's
# rows, the spread rows, the table) and .md (the table), and prints its
# duration. fp32, 2 threads, OpenMP's default waits (as `make bench`).
# The untimed first pass of backbone_latency.py (the outputs compared with
# mmdet's) warms every model up, hence --warmup 0 at 1600x2688.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(tools/find_python.sh)}  # an activated env, else .venv
OUT=${BENCH_RESULTS:-benchmarks/results}
part=${1:-summary}
case $part in
    summary|allocators|all) ;;
    *) echo "usage: $0 [summary|allocators|all], got '$part'" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
echo "start $(date -u +%FT%TZ), load average: $(cut -d' ' -f1-3 /proc/loadavg)"

step() {  # step NAME SCRIPT ARGS...: one benchmark, its JSON and Markdown
    local name=$1 script=$2 start=$SECONDS log marker
    shift 2
    log=$(mktemp)
    marker=$(mktemp)  # older than a JSON this step writes
    echo "== $name: python $script $*"
    env -u OMP_WAIT_POLICY "$PY" "$script" --threads 2 --runs 3 "$@" \
        --out "$OUT/remeasure_$name.json" | tee "$log"
    # The Markdown only where the JSON was written (not by a dry run, such
    # as the docs-command test's probe).
    if [ "$OUT/remeasure_$name.json" -nt "$marker" ]; then
        grep -v '^wrote ' "$log" > "$OUT/remeasure_$name.md"
    fi
    rm -f "$log" "$marker"
    echo "== $name: $((SECONDS - start)) s"
}

if [ "$part" != allocators ]; then
    step forward_small benchmarks/backbone_latency.py \
        --sizes 2x3x512x512 8x3x224x224 --impls mmswin-sdpa mmdet hf \
        --repeats 5 --warmup 1
    step forward_large benchmarks/backbone_latency.py \
        --sizes 1x3x1600x2688 --impls mmswin-sdpa mmdet hf \
        --repeats 2 --warmup 0
    step train_step benchmarks/train_step.py \
        --sizes 1x3x800x1344 2x3x512x512 --repeats 1 --warmup 1
    step whole_model benchmarks/whole_model.py --repeats 2 --warmup 1
fi
if [ "$part" != summary ]; then
    step allocators benchmarks/deploy_latency.py --models det --quick \
        --paths "PyTorch eager fp32" "PyTorch eager bf16 autocast" \
        "OpenVINO f32" "OpenVINO int8" --allocators glibc tcmalloc \
        --repeats 3 --warmup 1
fi
echo "end $(date -u +%FT%TZ), load average: $(cut -d' ' -f1-3 /proc/loadavg)"
