#!/usr/bin/env bash
# Negative Distillation end to end, for any corpus nd-prepare reads:
#
#   nd-prepare -> preprocess.sh (sentencepiece, source-entropy filter, fairseq-preprocess)
#   -> Standard (MLE) -> negative teacher (MLE on the top-50% entropy set)
#   -> ND student (--criterion negative_distillation) -> fairseq-generate -> nd-eval
#
# examples/chitchat/run.sh (the README's main job), examples/dailydialog/run.sh and
# examples/opensubtitles/run.sh call this with their settings. Every step is skipped when its
# output exists (--force redoes them).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: examples/pipeline.sh [--format F --input PATH ...] [--work DIR] [--scale cpu|paper]
                            [--updates N] [--teacher-updates N] [--max-tokens N | --batch-size N]
                            [--lr LR] [--warmup N] [--seed N] [--alpha-lambda L] [--alpha-gamma G]
                            [--key KEY] [--beam N] [--fp16] [--threads N] [--force]
                            [-- FAIRSEQ_TRAIN_FLAGS...]

  --format F --input P  corpus for nd-prepare (default: chitchat-dataset, no path); also
                        --valid-input/--test-input for pre-split corpora
  --work DIR          everything goes under DIR                              [work/chitchat]
  --scale cpu|paper   cpu: transformer_nd_dialog_small (2+2 layers, 128) on a capped corpus;
                      paper: transformer_nd_dialog (6+6, 512, 8 heads), full corpus      [cpu]
  --updates N         updates for Standard and for the ND student        [cpu: 600, paper: 50000]
  --teacher-updates N updates for the negative teacher                  [cpu: 400, paper: --updates]
  --max-tokens N      tokens per batch                                    [cpu: 4096, paper: 8192]
  --batch-size N      sentences per batch instead (the paper: 256)
  --lr LR --warmup N  peak learning rate and inverse-sqrt warm-up     [cpu: 1e-3/200, paper: 5e-4/4000]
  --alpha-lambda L    λ of the α schedule (peak α = λ/4)                                   [4]
  --alpha-gamma G     update of the α peak                                   [half of --updates]
  --key KEY           nd-filter grouping key (auto: chosen on the corpus, see nd-filter --help) [auto]
  --beam N            decoding beam (1 = greedy, the paper's main setting)                 [1]
  --fp16              mixed precision (GPU)
  --threads N         torch threads per process                                   [all cores]
  --force             redo every step even if its output exists
EOF
}

die() { echo "pipeline.sh: error: $*" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
WORK=work/chitchat
PREPARE_INPUT=()
SCALE=cpu
UPDATES=""
TEACHER_UPDATES=""
MAX_TOKENS=""
SEED=1
LAMBDA=4
GAMMA=""
BEAM=1
KEY=auto
LR=""
WARMUP=""
BATCH=()
FP16=()
THREADS=""
FORCE=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --format|--input|--response-input|--valid-input|--test-input|--valid-response-input|--test-response-input)
      PREPARE_INPUT+=("$1" "$2"); shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --lr) LR="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --batch-size) BATCH=(--batch-size "$2"); shift 2 ;;
    --key) KEY="$2"; shift 2 ;;
    --scale) SCALE="$2"; shift 2 ;;
    --updates) UPDATES="$2"; shift 2 ;;
    --teacher-updates) TEACHER_UPDATES="$2"; shift 2 ;;
    --max-tokens) MAX_TOKENS="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --alpha-lambda) LAMBDA="$2"; shift 2 ;;
    --alpha-gamma) GAMMA="$2"; shift 2 ;;
    --beam) BEAM="$2"; shift 2 ;;
    --fp16) FP16=(--fp16); shift ;;
    --threads) THREADS="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

case "$SCALE" in
  cpu)   ARCH=transformer_nd_dialog_small; : "${UPDATES:=600}"; : "${MAX_TOKENS:=4096}"
         : "${TEACHER_UPDATES:=400}"
         PREP=(--max-units 2500 --max-length 32 --truncate --max-test-pairs 1000 --max-valid-pairs 1000)
         VOCAB=4000; : "${LR:=1e-3}"; : "${WARMUP:=200}" ;;
  paper) ARCH=transformer_nd_dialog; : "${UPDATES:=50000}"; : "${MAX_TOKENS:=8192}"
         PREP=(--max-length 64 --truncate); VOCAB=16000; : "${LR:=5e-4}"; : "${WARMUP:=4000}" ;;
  *) die "--scale must be cpu or paper, not $SCALE" ;;
esac
: "${TEACHER_UPDATES:=$UPDATES}"
: "${GAMMA:=$((UPDATES / 2))}"
[[ -n "$THREADS" ]] && export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
for tool in nd-prepare nd-eval fairseq-train fairseq-generate; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH; install first: pip install -e ."
done

TEXT=$WORK/text
DATA=$WORK/data-bin
CKPT=$WORK/checkpoints
GEN=$WORK/generate
LOGS=$WORK/logs
mkdir -p "$WORK" "$CKPT" "$GEN" "$LOGS"
T0=$SECONDS
step() { echo; echo "== [$(( (SECONDS - T0) / 60 ))m$(( (SECONDS - T0) % 60 ))s] $*"; }

step "1/6 nd-prepare: ${PREPARE_INPUT[*]:-chitchat-dataset} -> $TEXT"
if [[ $FORCE -eq 1 || ! -s "$TEXT/test.response" ]]; then
  nd-prepare --out-dir "$TEXT" --seed "$SEED" "${PREP[@]}" "${PREPARE_INPUT[@]}"
else
  echo "(exists)"
fi

step "2/6 preprocess.sh: sentencepiece ($VOCAB), source-entropy filter (key $KEY), fairseq-preprocess"
force_opt=()
[[ $FORCE -eq 1 ]] && force_opt=(--force)
bash "$REPO/preprocess.sh" --text-dir "$TEXT" --work-dir "$WORK/prep" --dest "$DATA" \
  --vocab-size "$VOCAB" --key "$KEY" "${force_opt[@]}"

COMMON=(--user-dir "$REPO/nd_fairseq" --task negative_distillation --arch "$ARCH"
        --optimizer adam --adam-betas '(0.9, 0.98)' --lr "$LR" --lr-scheduler inverse_sqrt
        --warmup-updates "$WARMUP" --clip-norm 1.0 --max-tokens "$MAX_TOKENS" "${BATCH[@]}" --seed "$SEED"
        --validate-interval-updates $((UPDATES / 6 > 0 ? UPDATES / 6 : 1)) --save-interval-updates $((UPDATES / 6 > 0 ? UPDATES / 6 : 1))
        --keep-interval-updates 1 --no-epoch-checkpoints --max-epoch 1000
        --log-format simple --log-interval 50 --no-progress-bar --num-workers 0 "${FP16[@]}")

train() {  # name data_dir updates criterion_args...
  local name=$1 data=$2 updates=$3; shift 3
  if [[ $FORCE -eq 0 && -f "$CKPT/$name/checkpoint_best.pt" && -f "$CKPT/$name/.done" ]]; then
    echo "(exists: $CKPT/$name/checkpoint_best.pt)"; return
  fi
  rm -rf "$CKPT/$name"
  # full log to a file, fairseq's progress lines to the terminal
  { fairseq-train "$data" "${COMMON[@]}" --max-update "$updates" --save-dir "$CKPT/$name" "$@" "${EXTRA[@]}" 2>&1
    echo $? > "$LOGS/$name.rc"; } | tee "$LOGS/$name.log" | { grep --line-buffered -E "\| (train_inner|valid|train) \||Error" || true; }
  [[ "$(cat "$LOGS/$name.rc")" == 0 && -f "$CKPT/$name/checkpoint_best.pt" ]] || die "training $name failed; see $LOGS/$name.log"
  touch "$CKPT/$name/.done"
}

LS=(--criterion label_smoothed_cross_entropy --label-smoothing 0.1)
step "3/6 Standard: MLE on $DATA/full ($UPDATES updates, $ARCH)"
train standard "$DATA/full" "$UPDATES" "${LS[@]}"

step "4/6 negative teacher: MLE on the top-50% source-entropy set $DATA/negative ($TEACHER_UPDATES updates)"
train teacher "$DATA/negative" "$TEACHER_UPDATES" "${LS[@]}"

step "5/6 ND student: negative distillation from the teacher (α peak $LAMBDA/4 at update $GAMMA)"
train nd "$DATA/full" "$UPDATES" --criterion negative_distillation --label-smoothing 0.1 \
  --teacher-path "$CKPT/teacher/checkpoint_best.pt" --alpha-lambda "$LAMBDA" --alpha-gamma "$GAMMA"

step "6/6 fairseq-generate (beam $BEAM) and nd-eval"
systems=()
for name in standard teacher nd; do
  out="$GEN/$name.beam$BEAM.txt"
  if [[ $FORCE -eq 1 || ! -s "$out" ]]; then
    fairseq-generate "$DATA/full" --user-dir "$REPO/nd_fairseq" --path "$CKPT/$name/checkpoint_best.pt" \
      --gen-subset test --beam "$BEAM" --batch-size 200 --max-len-b 40 --remove-bpe sentencepiece \
      "${FP16[@]}" > "$out.tmp" 2> "$LOGS/generate.$name.log" || die "fairseq-generate failed for $name; see $LOGS/generate.$name.log"
    mv "$out.tmp" "$out"
  fi
  systems+=(--system "$name=$out")
done
nd-eval "${systems[@]}" --train-responses "$TEXT/train.response" --json "$WORK/results.json" | tee "$WORK/results.md"
echo
echo "Done in $(( (SECONDS - T0) / 60 ))m$(( (SECONDS - T0) % 60 ))s. Results: $WORK/results.md, $WORK/results.json;"
echo "outputs: $GEN/; checkpoints: $CKPT/{standard,teacher,nd}/checkpoint_best.pt; logs: $LOGS/"
