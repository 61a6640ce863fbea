#!/usr/bin/env bash
# The embedded default end to end, on a CPU in minutes, no downloads: certify the digits test set with
# the shipped zoo models (zoo:digits_cnn classifier, zoo:digits_ddpm diffusion denoiser) by
# diffusion-denoised smoothing at sigma = 0.25, 0.50, 1.00 and by the MDDS cascade over all three,
# then the certified-accuracy table and plot (the README figure, docs/digits_certified.png).
#
# Usage: bash scripts/digits_demo.sh [--dry-run]
# Env: OUT_DIR, N (500), N0 (100), SKIP (4: 90 of the 360 test digits), BATCH (600), DEVICE (cpu),
#      PLOT (docs/digits_certified.png), CLASSIFIER (zoo:digits_cnn), DENOISER (zoo:digits_ddpm),
#      OMP_NUM_THREADS (2); see scripts/lib.sh.
# Output: $OUT_DIR/certify/digits/{dds/sigma_S_N$N.tsv, mdds/sigma_0.25_0.50_1.00_N$N.tsv}, $PLOT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"

N="${N:-500}"
N0="${N0:-100}"
SKIP="${SKIP:-4}"
BATCH="${BATCH:-600}"
DEVICE="${DEVICE:-cpu}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
PLOT="${PLOT:-docs/digits_certified.png}"
CLASSIFIER="${CLASSIFIER:-zoo:digits_cnn}"
DENOISER="${DENOISER:-zoo:digits_ddpm}"
out="$OUT_DIR/certify/digits"
common=(--N0 "$N0" --N "$N" --skip "$SKIP" --batch "$BATCH" --denoiser "$DENOISER" --device "$DEVICE" --resume)

tsvs=()
labels=()
for sigma in 0.25 0.50 1.00; do
  tsv="$out/dds/sigma_${sigma}_N${N}.tsv"
  certify digits "$CLASSIFIER" "$tsv" --sigmas "$sigma" "${common[@]}"
  tsvs+=("$tsv")
  labels+=("DDS sigma=${sigma}")
done

sigmas=(0.25 0.50 1.00)
tsv="$out/mdds/sigma_$(IFS=_; echo "${sigmas[*]}")_N${N}.tsv"
certify digits "$CLASSIFIER" "$tsv" --sigmas "${sigmas[@]}" "${common[@]}"
tsvs+=("$tsv")
labels+=("MDDS cascade")

table "${tsvs[@]}" --labels "${labels[@]}" --radii 0 0.25 0.5 0.75 1.0 1.5 2.0 \
  --plot "$PLOT" --title "digits: certified accuracy (N=$N, $CLASSIFIER + $DENOISER)"
