#!/usr/bin/env bash
# The GPU check, in one go (about 8 minutes on one H100/H200), everything written to ONE results file:
#   1. the environment (GPU, driver, torch, CUDA);
#   2. the GPU-marked tests (pytest -m gpu) and the CUDA-only ones of tests/test_speed.py;
#   3. the certify throughput bench at --config cifar (52M improved-diffusion UNet + CLIP_B16 at 224,
#      random weights) for fp32 (--amp off), fp16, bf16 (with --sound's grid noise beside it) and
#      bf16 + torch.compile;
#   4. the agreement of labels, counts and certified rows between precisions on the same noise seeds
#      (bench/precision_agreement.py of issue 12: trained digits zoo models, single sigma and cascade);
#   5. 2-rank torchrun on one GPU (both ranks on cuda:0; rank 0 merges the ranks' rows over gloo): the
#      rows must equal a one-process run's (certify.py, the digits zoo models, two sigmas: the cascade);
#   6. a summary: each step's status and time, and the bench's headline figures.
#
#   bench/gpu_check.sh              # on the GPU machine; results in $OUT (device tool) or bench/results/
#   bench/gpu_check.sh --dry-run    # CPU, tiny models, seconds: the same steps and code paths (CI runs it)
#
# Environment: PYTHON (default: python3 from PATH, else .venv/bin/python), OUT (results folder).
# A step that fails is recorded and the script goes on; the exit status is the number of failed steps.
set -uo pipefail

cd "$(dirname "$0")/.."
DRY=0
for a in "$@"; do
  case "$a" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $a (use --dry-run)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=$(command -v python3 || command -v python); fi
fi
RESULTS_DIR=${OUT:-bench/results}
mkdir -p "$RESULTS_DIR"
TAG=$([ "$DRY" = 1 ] && echo dryrun || echo gpu)
RESULTS="$RESULTS_DIR/gpu_check_${TAG}.txt"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
: > "$RESULTS"

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; CONFIG=small; SECONDS_PER=0.2; ROUNDS=1; N_TORCHRUN=64; PRECISIONS="off bf16"; BATCH=(--batch 32 --ref_batch 32)
  AGREE=(--modes fp32 bf16 --skip 120 --sigmas 0.25 0.5 --N0 8 --N 32 --batch 32); TORCHRUN_DEVICE=cpu; export CUDA_VISIBLE_DEVICES=""
else
  DEVICE=cuda; CONFIG=cifar; SECONDS_PER=4; ROUNDS=3; N_TORCHRUN=2000; PRECISIONS="off fp16 bf16 bf16+compile"; BATCH=()
  AGREE=(--modes fp32 fp16 bf16 tf32 compile --N 2000 --batch 1000); TORCHRUN_DEVICE=cuda:0
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

STATUS=()
FAILED=0
step() {   # step NAME TIMEOUT_S CMD...: run, log output and status into $RESULTS
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc
  printf '\n===== %s =====\n$ %s\n' "$name" "$*" >> "$RESULTS"
  timeout --kill-after=10 "$limit" "$@" >> "$RESULTS" 2>&1
  rc=$?
  local took=$((SECONDS - t0))
  if [ $rc -eq 0 ]; then STATUS+=("PASS  $name (${took}s)"); else STATUS+=("FAIL  $name (rc $rc, ${took}s)"); FAILED=$((FAILED + 1)); fi
  printf -- '----- %s: rc %s, %ss\n' "$name" "$rc" "$took" >> "$RESULTS"
  echo "gpu_check: $name: rc $rc (${took}s)"
}

{
  echo "msrs GPU check ($TAG) $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "python $PY"
} >> "$RESULTS"

# 1. environment
step "environment" 60 "$PY" -c "
import platform, torch
print('host', platform.node(), '| python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.version.cuda)
print('cuda available', torch.cuda.is_available(), '| devices', torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i); print(' ', i, p.name, f'{p.total_memory / 2**30:.0f} GiB', f'sm_{p.major}{p.minor}')
print('bf16 supported', torch.cuda.is_available() and torch.cuda.is_bf16_supported())
"
command -v nvidia-smi > /dev/null && step "nvidia-smi" 30 nvidia-smi

# 2. GPU tests (skipped, but collected, on CPU)
step "pytest -m gpu" 150 "$PY" -m pytest -q -p no:cacheprovider -n0 -m gpu tests/
step "pytest CUDA-only speed tests" 90 "$PY" -m pytest -q -p no:cacheprovider -n0 tests/test_speed.py -k cuda

# 3. throughput, one precision at a time (medians of interleaved rounds; our path vs the bare forward floor)
for prec in $PRECISIONS; do
  amp=${prec%%+*}; extra=()
  [ "$prec" != "$amp" ] && extra=(--compile)
  [ "$prec" = bf16 ] && extra=(--sound)          # and the cost of --sound's exact grid noise, at bf16
  step "throughput $CONFIG amp=$amp ${extra[*]}" 150 "$PY" bench/certify_throughput.py --device "$DEVICE" \
    --config "$CONFIG" --amp "$amp" "${extra[@]}" "${BATCH[@]}" --seconds "$SECONDS_PER" --rounds "$ROUNDS"
done

# 4. labels / counts / certified rows across precisions on the same seeds (issue 12's bench)
step "precision agreement" 240 "$PY" bench/precision_agreement.py --device "$DEVICE" "${AGREE[@]}"

# 5. 2-rank torchrun on one device: merged rows == one-process rows
TR=("$PY" -m torch.distributed.run --standalone --nproc_per_node=2)
CERT=(certify.py digits zoo:digits_cnn)
FLAGS=(--sigmas 0.25 0.5 --N0 32 --N "$N_TORCHRUN" --skip 60 --batch 256 --device "$TORCHRUN_DEVICE" --denoiser none)
step "certify one process" 120 "$PY" "${CERT[@]}" "$WORK/one.tsv" "${FLAGS[@]}"
step "certify torchrun 2 ranks" 150 "${TR[@]}" "${CERT[@]}" "$WORK/two.tsv" "${FLAGS[@]}"
step "torchrun rows == one-process rows" 30 "$PY" -c "
import sys, pandas as pd
a, b = (pd.read_csv(f, sep='\t').drop(columns=['time']) for f in sys.argv[1:])
print(a.to_string(max_rows=8)); pd.testing.assert_frame_equal(a, b); print('identical:', len(a), 'rows')
" "$WORK/one.tsv" "$WORK/two.tsv"

# 6. summary
{
  echo
  echo "===== summary ====="
  printf '%s\n' "${STATUS[@]}"
  echo
  echo "throughput headlines (samples/s of our path, ratio to the bare forward floor):"
  grep -E "^(certify throughput|ours:|\| \(1\)|\| \(2|\(a\)|\(d\))" "$RESULTS" | sed 's/^/  /'
  echo "goal: >= 3000 CIFAR DDS samples/s on one H100/H200 at >= 0.95 of the floor"
  echo "failed steps: $FAILED"
} >> "$RESULTS"
echo "gpu_check: results in $RESULTS ($FAILED failed steps)"
exit "$FAILED"
