#!/usr/bin/env bash
# The GPU numbers of BENCHMARKS.md in one go (about 8 minutes on one H100/H200-class GPU, install included):
#
#   bash benchmarks/gpu_check.sh                        # on a GPU machine with this repository and pip
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh       # CPU, tiny model, no install: what tests/test_benchmarks.py runs
#
# 1. installs the project with its `torch` and `gpu` extras (`pip install -e .[torch,gpu]`: jax[cuda12] and the
#    CUDA build of torch) unless GPU_CHECK_TINY is set or GPU_CHECK_NO_INSTALL=1;
# 2. benchmarks/train_step.py, bfloat16 only, one round: ViT-B/16 8 frames and ViT-B/32 8 frames, our jitted train
#    step (MFU = analytic FLOPs / step time / the GPU's dense bf16 peak, metrics.PEAK_BF16_FLOPS) against the
#    PyTorch twin (torch.autocast bf16; nn.MultiheadAttention runs scaled_dot_product_attention when need_weights is
#    False), eval throughput, peak GPU memory; B/16 also times the vision attention alone, plain XLA against
#    cuDNN flash attention (jax.nn.dot_product_attention(implementation='cudnn'), skipped off GPU).
# JSON lines and Markdown tables land in $GPU_CHECK_OUT (default workdirs/gpu_check); the tables are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-workdirs/gpu_check}
mkdir -p "$OUT"

if [[ -n "${GPU_CHECK_TINY:-}" ]]; then
  # CPU smoke run: every code path but cuDNN, in seconds.
  COMMON=(--dtypes bfloat16 --rounds 1 --steps 1 --warmup 1 --matmul 256 --classes 8 --frames 2)
  RUNS=("b16|--preset tiny --batch 2 --eval-batch 2 --attention")
else
  if [[ -z "${GPU_CHECK_NO_INSTALL:-}" ]]; then
    "$PY" -m pip install -q -e '.[torch,gpu]'
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  COMMON=(--dtypes bfloat16 --rounds 1 --steps 5 --warmup 2 --matmul 8192)
  RUNS=("b16|--preset ViT-B/16 --frames 8 --batch 32 --eval-batch 64 --attention"
        "b32|--preset ViT-B/32 --frames 8 --batch 64 --eval-batch 128")
fi

"$PY" -c 'import jax, torch; print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__,
           "cuda", torch.cuda.is_available())'
for run in "${RUNS[@]}"; do
  name=${run%%|*}
  read -r -a flags <<< "${run#*|}"
  echo "=== $name: ${flags[*]}"
  "$PY" benchmarks/train_step.py "${flags[@]}" "${COMMON[@]}" --out "$OUT/$name.jsonl" | tee "$OUT/$name.log"
done
echo "gpu_check: results in $OUT"
