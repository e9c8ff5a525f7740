#!/usr/bin/env bash
# text -> sentencepiece -> source-entropy filter (nd-filter) -> fairseq-preprocess
#
# Builds, with ONE shared dictionary:
#   DEST/full      the whole training set (+ valid, test) and train.entropy (per-pair H_src)
#   DEST/negative  the top --ratio of training pairs by H_src (the negative set D_N)
#   DEST/bottom    the bottom pairs (only with --bottom; the paper's Table 6 ablation)
#
# Idempotent: a run whose inputs and options match the last completed run does nothing; anything
# else is rebuilt in a temporary directory and moved into place only when complete.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: preprocess.sh [--text-dir DIR] [--work-dir DIR] [--dest DIR] [--vocab-size N]
                     [--ratio R | --threshold T] [--key KEY] [--bottom] [--workers N] [--force]

  --text-dir DIR    aligned {train,valid,test}.{query,response} text (nd-prepare output) [data/chitchat/text]
  --work-dir DIR    sentencepiece model, encoded text and filter outputs               [data/chitchat/work]
  --dest DIR        binarised data: DIR/full, DIR/negative, DIR/bottom                  [data-bin]
  --vocab-size N    sentencepiece vocabulary size                                      [8000]
  --ratio R         fraction of training pairs in the negative set                     [0.5]
  --threshold T     entropy cut instead of a ratio (top = H_src > T)
  --key KEY         nd-filter grouping key: auto, exact, normalized, prefix:K            [auto]
                    (auto: the finest key leaving at most 1 - ratio of the pairs at H_src = 0)
  --base B          entropy log base for train.entropy: 2 or e                         [2]
  --bottom          also build DEST/bottom
  --workers N       fairseq-preprocess workers                                         [2]
  --force           rebuild even if the inputs and options did not change
EOF
}

die() { echo "preprocess.sh: error: $*" >&2; exit 2; }

TEXT=data/chitchat/text
WORK=data/chitchat/work
DEST=data-bin
VOCAB=8000
RATIO=0.5
THRESHOLD=""
KEY=auto
BASE=2
BOTTOM=0
WORKERS=2
FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --text-dir) TEXT="$2"; shift 2 ;;
    --work-dir) WORK="$2"; shift 2 ;;
    --dest) DEST="$2"; shift 2 ;;
    --vocab-size) VOCAB="$2"; shift 2 ;;
    --ratio) RATIO="$2"; shift 2 ;;
    --threshold) THRESHOLD="$2"; shift 2 ;;
    --key) KEY="$2"; shift 2 ;;
    --base) BASE="$2"; shift 2 ;;
    --bottom) BOTTOM=1; shift ;;
    --workers) WORKERS="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

for tool in nd-spm nd-filter fairseq-preprocess; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH; install the plugin first: pip install -e ."
done
[[ "$VOCAB" =~ ^[0-9]+$ ]] || die "--vocab-size $VOCAB is not a number"
for split in train valid test; do
  for side in query response; do
    f="$TEXT/$split.$side"
    [[ -s "$f" ]] || die "$f is missing or empty; create the text with nd-prepare --out-dir $TEXT"
  done
  # every split, not only train: fairseq-train would fail later with an error naming no file
  nq=$(awk 'END { print NR }' "$TEXT/$split.query")
  nr=$(awk 'END { print NR }' "$TEXT/$split.response")
  [[ $nq -eq $nr ]] || die "misaligned $split split: $TEXT/$split.query has $nq lines, $TEXT/$split.response has $nr; each query line must pair with the same response line (recreate the text with nd-prepare --out-dir $TEXT)"
done

# One run at a time per destination (and work directory): a second run would move its sets into
# the first one's while it works. The lock is held on an open file and goes away with this shell.
lock() {  # lock FD LOCK_FILE DIRECTORY OPTION
  python -c 'import fcntl, sys; fcntl.flock(int(sys.argv[1]), fcntl.LOCK_EX | fcntl.LOCK_NB)' "$1" 2>/dev/null \
    || die "another preprocess.sh is writing to $3 (it holds the lock $2); wait for it to finish, or choose another $4"
}
mkdir -p "$WORK" "$DEST"
exec 8>>"$DEST/.preprocess.lock"
lock 8 "$DEST/.preprocess.lock" "$DEST" --dest
exec 9>>"$WORK/.preprocess-work.lock"
lock 9 "$WORK/.preprocess-work.lock" "$WORK" --work-dir
rm -rf "$DEST"/.preprocess.??????  # what a killed run left (no other run can be using it now)

# Fingerprint of inputs and options: same fingerprint as the finished output -> nothing to do.
stamp=$( { for f in "$TEXT"/{train,valid,test}.{query,response}; do cksum < "$f"; done
           echo "vocab=$VOCAB ratio=$RATIO threshold=$THRESHOLD key=$KEY base=$BASE bottom=$BOTTOM v1"; } | cksum | cut -d' ' -f1)
# Each set's stamp is "FINGERPRINT BUILD": up to date only when every set (and the work
# directory's model) comes from one build with this fingerprint, so a run interrupted between
# moving two sets into place is rebuilt, not reported as done.
up_to_date() {
  local first name names
  [[ -f "$DEST/full/.nd-stamp" ]] || return 1
  first=$(cat "$DEST/full/.nd-stamp")
  [[ "${first%% *}" == "$stamp" ]] || return 1
  names=(negative)
  [[ $BOTTOM -eq 1 ]] && names+=(bottom)
  for name in "${names[@]}"; do
    [[ -f "$DEST/$name/.nd-stamp" && "$(cat "$DEST/$name/.nd-stamp")" == "$first" ]] || return 1
  done
  [[ -f "$DEST/full/preprocessing.json" ]] || return 1  # built before the preparation was recorded
  cmp -s "$WORK/spm/spm.model" "$DEST/full/spm.model"
}
if [[ $FORCE -eq 0 ]] && up_to_date; then
  echo "preprocess.sh: $DEST is up to date with $TEXT (use --force to rebuild)"
  exit 0
fi

TMP=$(mktemp -d "$DEST/.preprocess.XXXXXX")
# fairseq-preprocess splits --validpref/--testpref on commas: it reads the encoded text through a
# link whose path has none, whatever the paths given here hold
SAFE=$(mktemp -d "${TMPDIR:-/tmp}/nd-preprocess.XXXXXX")
[[ "$SAFE" == *,* ]] && { rmdir "$SAFE"; SAFE=$(mktemp -d /tmp/nd-preprocess.XXXXXX); }
trap 'rm -rf "$TMP" "$SAFE"' EXIT

echo "== sentencepiece (vocabulary $VOCAB) on $TEXT/train.{query,response}"
mkdir -p "$TMP/spm"
ln -s "$(cd "$TMP/spm" && pwd)" "$SAFE/spm"
nd-spm train --input "$TEXT/train.query" "$TEXT/train.response" --model-prefix "$TMP/spm/spm" --vocab-size "$VOCAB"
for split in train valid test; do
  for side in query response; do
    nd-spm encode --model "$TMP/spm/spm.model" --input "$TEXT/$split.$side" --output "$TMP/spm/$split.$side" >/dev/null
  done
done

echo "== source-entropy filter (key $KEY)"
cut_opt=(--ratio "$RATIO")
[[ -n "$THRESHOLD" ]] && cut_opt=(--threshold "$THRESHOLD")
bottom_opt=()
[[ $BOTTOM -eq 1 ]] && bottom_opt=(--bottom)
# Scored on the word-level text (utterance identity is a property of the text, not of its pieces);
# the selected pairs are then encoded with the same sentencepiece model.
nd-filter --query "$TEXT/train.query" --response "$TEXT/train.response" --out-dir "$TMP/filter" \
  --key "$KEY" --base "$BASE" "${cut_opt[@]}" "${bottom_opt[@]}" --quiet
subsets=(top)
[[ $BOTTOM -eq 1 ]] && subsets+=(bottom)
for subset in "${subsets[@]}"; do
  for side in query response; do
    nd-spm encode --model "$TMP/spm/spm.model" --input "$TMP/filter/$subset.$side" --output "$TMP/spm/$subset.$side" >/dev/null
  done
done
python - "$TMP/filter/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"key {s['key']}" + (" (auto)" if s.get("key_requested") == "auto" else "") + ", "
      f"pairs {s['pairs']}, median H_src {s['median']:.3f}, zeros {s['zero_share']:.1%}, "
      f"cut {s['cut']}, negative set {s.get('top')}" + (f", bottom set {s['bottom']}" if 'bottom' in s else ""))
EOF

echo "== fairseq-preprocess: full"
fairseq-preprocess --source-lang query --target-lang response \
  --trainpref "$SAFE/spm/train" --validpref "$SAFE/spm/valid" --testpref "$SAFE/spm/test" \
  --destdir "$TMP/full" --joined-dictionary --workers "$WORKERS" > "$TMP/full.log" 2>&1 \
  || { cat "$TMP/full.log" >&2; die "fairseq-preprocess failed on the full set"; }
cp "$TMP/filter/scores.txt" "$TMP/full/train.entropy"
cp "$TMP/filter/summary.json" "$TMP/full/entropy.summary.json"

for subset in "${subsets[@]}"; do
  name=negative
  [[ $subset == bottom ]] && name=bottom
  echo "== fairseq-preprocess: $name (shared dictionary)"
  fairseq-preprocess --source-lang query --target-lang response \
    --trainpref "$SAFE/spm/$subset" --validpref "$SAFE/spm/valid" --testpref "$SAFE/spm/test" \
    --srcdict "$TMP/full/dict.query.txt" --tgtdict "$TMP/full/dict.response.txt" \
    --destdir "$TMP/$name" --workers "$WORKERS" > "$TMP/$name.log" 2>&1 \
    || { cat "$TMP/$name.log" >&2; die "fairseq-preprocess failed on the $name set"; }
  cmp -s "$TMP/full/dict.response.txt" "$TMP/$name/dict.response.txt" || die "dictionary of $name differs from full"
done

# The preparation travels with the data (preprocessing.json: nd-chat, DialogueModel and
# fairseq-interactive --tokenizer nd_prepare read it to prepare raw text as this data was).
prep_dirs=("$TMP/full" "$TMP/negative"); prep_subsets=(all top)
[[ $BOTTOM -eq 1 ]] && { prep_dirs+=("$TMP/bottom"); prep_subsets+=(bottom); }
# the key the filter used (--key auto records the one it chose)
key_used=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["key"])' "$TMP/filter/summary.json")
python -m nd_fairseq.data.preprocessing write "${prep_dirs[@]}" --subset "${prep_subsets[@]}" \
  --text-dir "$TEXT" --spm-model "$TMP/spm/spm.model" --vocab-size "$VOCAB" --key "$key_used" \
  --ratio "$RATIO" --threshold "$THRESHOLD" --base "$BASE" || die "could not write preprocessing.json"

# Move into place: work files first, the binarised sets last (their stamps mark completion).
rm -rf "$WORK/spm" "$WORK/filter"
mv -T "$TMP/spm" "$WORK/spm"
mv -T "$TMP/filter" "$WORK/filter"
built=(full negative)
[[ $BOTTOM -eq 1 ]] && built+=(bottom)
for name in "${built[@]}"; do
  mv "$TMP/$name.log" "$TMP/$name/preprocess.log"
  cp "$WORK/spm/spm.model" "$TMP/$name/spm.model"
  echo "$stamp ${TMP##*.}" > "$TMP/$name/.nd-stamp"
  rm -rf "$DEST/$name"
  mv -T "$TMP/$name" "$DEST/$name"
done
echo "== done: $DEST/full ($(wc -l < "$TEXT/train.query") training pairs), $DEST/negative ($(wc -l < "$WORK/filter/top.query") pairs)$([[ $BOTTOM -eq 1 ]] && echo ", $DEST/bottom")"
