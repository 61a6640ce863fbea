#!/usr/bin/env bash
# The embedded default end to end, on a CPU in minutes, no downloads: certify the digits test set with
# the shipped zoo (zoo:digits_cnn classifier; zoo:digits_ddpm diffusion denoiser, MDDS fine-tuned) by
# diffusion-denoised smoothing (DDS) at sigma = 0.25, 0.50, 1.00 and by the MDDS cascade over all three,
# and the same cascade with the plain DDPM it was fine-tuned from (zoo:digits_ddpm_plain); then the
# certified-accuracy table, what each cascade's sigma=1 stage did, and the README figure
# (docs/digits_certified.png: the curves and, dashed, the upper envelope of the three single-sigma curves).
#
# Usage: bash scripts/digits_demo.sh [--dry-run]
# Env: OUT_DIR (OUTPUT), N (1000), N0 (64), SKIP (6: 60 of the 360 test digits), BATCH (500), DEVICE (cpu),
#      PLOT (docs/digits_certified.png), CLASSIFIER (zoo:digits_cnn), DENOISER (zoo:digits_ddpm),
#      PLAIN (zoo:digits_ddpm_plain), OMP_NUM_THREADS (2); see scripts/lib.sh.
# Output: $OUT_DIR/certify/digits/{dds/sigma_S_N$N.tsv, mdds/sigma_0.25_0.50_1.00_N$N.tsv,
#         mdds_plain/sigma_0.25_0.50_1.00_N$N.tsv}, $PLOT
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
parse_args "$@"

noise_defaults 1000 6 500        # N, SKIP (every 6th of the 360 test digits: 60), BATCH
N0="${N0:-64}"
DEVICE="${DEVICE:-cpu}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
PLOT="${PLOT:-docs/digits_certified.png}"
CLASSIFIER="${CLASSIFIER:-zoo:digits_cnn}"
DENOISER="${DENOISER:-zoo:digits_ddpm}"
PLAIN="${PLAIN:-zoo:digits_ddpm_plain}"
out="$OUT_DIR/certify/digits"
common=(--N0 "$N0" --N "$N" --skip "$SKIP" --batch "$BATCH" --device "$DEVICE" --resume)

tsvs=()
labels=()
LABEL_PREFIX="DDS " certify_each_sigma digits "$CLASSIFIER" "$out/dds" --denoiser "$DENOISER" "${common[@]}"

name="sigma_0.25_0.50_1.00_N${N}.tsv"
certify digits "$CLASSIFIER" "$out/mdds_plain/$name" --sigma25 --sigma50 --sigma100 --denoiser "$PLAIN" "${common[@]}"
certify digits "$CLASSIFIER" "$out/mdds/$name" --sigma25 --sigma50 --sigma100 --denoiser "$DENOISER" "${common[@]}"
tsvs+=("$out/mdds_plain/$name" "$out/mdds/$name")
labels+=("MDDS cascade, plain DDPM" "MDDS cascade, MDDS fine-tuned")

# the table, the envelope of the three DDS runs and each cascade's gap to it, what each cascade's sigma=1
# stage did, and the figure (dashed: that envelope)
showcase=("$PYTHON" scripts/digits_showcase.py "${tsvs[@]}" --labels "${labels[@]}"
          --radii 0 0.25 0.5 0.75 1.0 1.5 2.0 --envelope_of 0 1 2 --plot "$PLOT"
          --title "digits: certified accuracy (N=$N, $CLASSIFIER + diffusion denoiser)")
if [[ "$LAUNCH" == local ]]; then
  run "${showcase[@]}"
else
  printf -v line '%q ' "${showcase[@]}"
  echo "# when the jobs are done, the tables and figure: ${line% }"
fi
