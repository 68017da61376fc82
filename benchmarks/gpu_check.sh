#!/usr/bin/env bash
# The GPU figures of issue 18 in one short call on a lent GPU machine (prepared; it needs
# only torch, einops and safetensors, which the device image has, and this checkout):
#   * the bf16 training step of `base` (306 sensors x 4 s, batch 32): windows/s, FLOPs per
#     window, MFU against the bf16 matmul peak measured in the same run and against the data
#     sheet, peak memory, packed eager, static-shape eager and compiled (megfm pretrain
#     --compile); next to the BERT-style reference at 153 sensors;
#   * `small` at 153 / 306 / 612 sensors, eager and compiled (compiled = eager is checked).
# Usage, from the repository root on the device: OUT=/some/folder bash benchmarks/gpu_check.sh
# (estimated 5-8 minutes, never run yet; JSON and a text summary land in $OUT).
set -euo pipefail
OUT=${OUT:-benchmarks/scratch}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
} > "$OUT/gpu.txt" 2>&1
"$PY" benchmarks/bench_pretrain.py --device cuda --precision bf16 --preset base \
    --models megfm --sensors 306 --steps 20 --warmup 5 --compile \
    --out "$OUT/pretrain_gpu_base.json" \
    | tee "$OUT/summary.txt"
"$PY" benchmarks/bench_pretrain.py --device cuda --precision bf16 --preset base \
    --models reference --sensors 153 --steps 10 --warmup 3 \
    --out "$OUT/pretrain_gpu_base_reference.json" | tee -a "$OUT/summary.txt"
"$PY" benchmarks/bench_pretrain.py --device cuda --precision bf16 --preset small \
    --models megfm --sensors 153 306 612 --steps 20 --warmup 5 --compile \
    --out "$OUT/pretrain_gpu_small.json" | tee -a "$OUT/summary.txt"
