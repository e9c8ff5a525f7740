#!/usr/bin/env bash
# Learning curves of the recipe's CPU base at other sentencepiece vocabulary sizes (RESULTS.md §8.16):
# for each SIZE, preprocess.sh binarises the same text with a SIZE-piece model (same filter, --key auto),
# then base_sweep.sh trains the recipe's Standard on it (lr 2e-3, warm-up 200, seed 1, UPDATES updates)
# and decodes its checkpoints at 1/2, 3/4 and all of UPDATES on the validation set.
#   bash examples/chitchat/vocab_sweep.sh WORK/text OUT 1000 4000     (WORK: a recipe's --work)
# Validation NLL is per piece, so it compares checkpoints of one size, not sizes; the decoded replies
# (BLEU-4, length, unique, Rep-3 in OUT/v{SIZE}/eval.md) compare sizes. All sizes train at once, one
# thread each. Resumes: preprocess.sh and base_sweep.sh keep what is done.
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: vocab_sweep.sh TEXT_DIR OUT_DIR SIZE [SIZE ...]" >&2; exit 2; }
TEXT=$1 OUT=$2
shift 2
[[ -f $TEXT/train.response ]] || { echo "vocab_sweep.sh: error: $TEXT/train.response not found; give a recipe's text directory" >&2; exit 2; }
for size in "$@"; do
  [[ $size =~ ^[1-9][0-9]*$ ]] || { echo "vocab_sweep.sh: error: vocabulary size '$size'; give a positive integer, e.g. 4000" >&2; exit 2; }
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$OUT"
for size in "$@"; do
  bash "$HERE/../../preprocess.sh" --text-dir "$TEXT" --work-dir "$OUT/v$size/prep" --dest "$OUT/v$size/data-bin" \
    --vocab-size "$size" --key auto >> "$OUT/v$size.preprocess.log" 2>&1 \
    || { echo "vocab_sweep.sh: error: preprocess.sh failed for size $size; see $OUT/v$size.preprocess.log" >&2; exit 1; }
done
# shellcheck source=background_jobs.sh
source "$HERE/background_jobs.sh"
sweep_size() {
  bash "$HERE/base_sweep.sh" "$OUT/v$1/data-bin/full" "$TEXT" "$OUT/v$1" "v$1=--lr 2e-3 --warmup-updates 200" \
    > "$OUT/v$1.sweep.log" 2>&1 || { echo "vocab_sweep.sh: error: base_sweep.sh failed for size $1; see $OUT/v$1.sweep.log" >&2; return 1; }
}
for size in "$@"; do start_job sweep_size "$size"; done
wait_jobs  # a failed size stops the sweep, and the others with it
for size in "$@"; do echo "== vocabulary $size: $OUT/v$size/eval.md"; cat "$OUT/v$size/eval.md"; done
