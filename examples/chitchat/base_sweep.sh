#!/usr/bin/env bash
# Learning curves of changes of the recipe's CPU base (RESULTS.md §8.8): by default lr 4e-3 with 400
# warm-up updates, and dropout 0.3; or the points given as NAME=FLAGS (the flags that differ from the
# recipe's Standard, e.g. "base=--lr 2e-3 --warmup-updates 200"). Seed 1, UPDATES (default 3,000)
# updates, validation every UPDATES/12; the checkpoints at 1/2, 3/4 and all of UPDATES (1,500,
# 2,250, 3,000) are decoded greedy and beam 5 on the validation set and scored with nd-eval.
#   bash examples/chitchat/base_sweep.sh WORK/data-bin/full WORK/text OUT [NAME=FLAGS ...]
#   (WORK: a recipe's --work; examples/chitchat/vocab_sweep.sh calls it once per vocabulary size)
# Every point trains at once, one thread each. Resumes: a finished checkpoint or decoding is kept.
set -euo pipefail
[[ $# -ge 3 ]] || { echo "usage: base_sweep.sh DATA_BIN TEXT_DIR OUT_DIR [NAME=FLAGS ...]" >&2; exit 2; }
DATA=$1 TEXT=$2 OUT=$3
shift 3
POINTS=("$@")
[[ ${#POINTS[@]} -gt 0 ]] || POINTS=("lr4e-3=--lr 4e-3 --warmup-updates 400" "dropout0.3=--lr 2e-3 --warmup-updates 200 --dropout 0.3")
for point in "${POINTS[@]}"; do
  [[ $point =~ ^[A-Za-z0-9._-]+=. ]] || { echo "base_sweep.sh: error: sweep point '$point'; give NAME=FLAGS, e.g. 'base=--lr 2e-3 --warmup-updates 200'" >&2; exit 2; }
done
[[ -f $DATA/dict.query.txt ]] || { echo "base_sweep.sh: error: $DATA/dict.query.txt not found; give a recipe's data-bin/full" >&2; exit 2; }
[[ -f $TEXT/train.response ]] || { echo "base_sweep.sh: error: $TEXT/train.response not found; give a recipe's text directory" >&2; exit 2; }
UPDATES=${UPDATES:-3000}
(( UPDATES >= 12 && UPDATES % 12 == 0 )) || { echo "base_sweep.sh: error: UPDATES=$UPDATES; give a multiple of 12" >&2; exit 2; }
USER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../nd_fairseq" && pwd)
export OMP_NUM_THREADS=1
mkdir -p "$OUT"

sweep_point() {  # name, then the flags that differ from the recipe's Standard
  local name=$1; shift
  fairseq-train "$DATA" --user-dir "$USER_DIR" --task negative_distillation --arch transformer_nd_dialog_small \
    --encoder-normalize-before --decoder-normalize-before --share-all-embeddings \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --optimizer adam --adam-betas '(0.9, 0.98)' \
    --lr-scheduler inverse_sqrt --clip-norm 1.0 --max-tokens 4096 --max-update $UPDATES --max-epoch 1000 --seed 1 \
    --save-dir "$OUT/$name" --validate-interval-updates $((UPDATES / 12)) --save-interval-updates $((UPDATES / 4)) --keep-interval-updates -1 \
    --no-epoch-checkpoints --log-format json --log-interval 50 --no-progress-bar --num-workers 0 "$@" \
    >> "$OUT/$name.train.log" 2>&1
  local u mode flags out
  for u in $((UPDATES / 2)) $((UPDATES * 3 / 4)) $UPDATES; do
    for mode in greedy beam5; do
      flags="--beam 1"; [[ $mode == beam5 ]] && flags="--beam 5"
      out=$OUT/$name.$u.$mode.valid.txt
      [[ -s $out ]] && continue
      # shellcheck disable=SC2086
      fairseq-generate "$DATA" --user-dir "$USER_DIR" --path "$(ls "$OUT/$name"/checkpoint_*_$u.pt)" \
        --gen-subset valid $flags --batch-size 200 --max-len-b 40 --remove-bpe sentencepiece \
        > "$out.tmp" 2>> "$OUT/$name.generate.log" && mv "$out.tmp" "$out"
    done
  done
}

# shellcheck source=background_jobs.sh
source "$(dirname "${BASH_SOURCE[0]}")/background_jobs.sh"
for point in "${POINTS[@]}"; do
  # shellcheck disable=SC2086
  start_job sweep_point "${point%%=*}" ${point#*=}
done
wait_jobs  # a failed point stops the sweep, and the others with it
systems=()
for f in "$OUT"/*.valid.txt; do systems+=(--system "$(basename "$f" .valid.txt)=$f"); done
nd-eval "${systems[@]}" --train-responses "$TEXT/train.response" --json "$OUT/eval.json" | tee "$OUT/eval.md"
# validation NLL per update: the "valid" lines of $OUT/*.train.log (valid_nll_loss, bits per piece)
