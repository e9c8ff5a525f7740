#!/usr/bin/env bash
# PNEG (Lee et al., 2022) with nd_fairseq: generate adversarial negatives with a large LM behind an
# OpenAI-compatible completions endpoint, compare response-selection rankers trained with random,
# BM25, PNEG and human negatives (Table 1), and export the negatives for Negative Distillation.
#
#   DDPP=data/dailydialog++ BASE_URL=http://localhost:8000/v1 MODEL=meta-llama/Llama-3.1-8B \
#     bash examples/pneg/run_pneg.sh
#
# DDPP holds DailyDialog++'s train.json, dev.json and test.json (JSON lines). A local server, e.g.
#   vllm serve meta-llama/Llama-3.1-8B --port 8000        (or llama.cpp's llama-server --port 8000)
# or OpenAI itself (BASE_URL=https://api.openai.com/v1, MODEL=davinci-002, OPENAI_API_KEY set).
# Generation is resumable: rerun the script after an interruption and it continues where it stopped.
set -euo pipefail

DDPP=${DDPP:-data/dailydialog++}
BASE_URL=${BASE_URL:-http://localhost:8000/v1}
MODEL=${MODEL:?set MODEL to the served model name}
OUT=${OUT:-runs/pneg}
CONCURRENCY=${CONCURRENCY:-8}
SOURCES=${SOURCES:-random,bm25,pneg,human}
ND_TRAIN=${ND_TRAIN:-}          # optional: prefix of nd-prepare's train.query/train.response
RANK_ARGS=${RANK_ARGS:-"--max-epoch 10 --patience 2"}   # e.g. "--max-update 100 --jobs 2" for a quick look
VALID_PROTOCOL=${VALID_PROTOCOL:-source}  # source: each source validates on its own negatives; random: 1 + 10 random
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

mkdir -p "$OUT"

# 1. what the model sees for the first training context (k = 2 demonstrations, Appendix G)
nd-pneg prompt --examples "$DDPP/train.json" --input "$DDPP/train.json" --index 0

# 2. five adversarial negatives per training context, filtered (Appendix F), regenerated up to 5 times
nd-pneg generate --examples "$DDPP/train.json" --input "$DDPP/train.json" \
  --output "$OUT/pneg.train.jsonl" --base-url "$BASE_URL" --model "$MODEL" --concurrency "$CONCURRENCY"

# 3. candidate sets: train 1 positive + 5 random + 5 per source; validation per --valid-protocol;
#    test random and adversarial (1 + 5); the positive is drawn among each context's five (seeded)
VALID_ARGS=(--valid "$DDPP/dev.json" --valid-protocol "$VALID_PROTOCOL")
if [ "$VALID_PROTOCOL" = source ] && [[ ",$SOURCES," == *,pneg,* ]]; then
  # pneg validated on its own negatives: generate them for the validation contexts too
  nd-pneg generate --examples "$DDPP/train.json" --input "$DDPP/dev.json" \
    --output "$OUT/pneg.dev.jsonl" --base-url "$BASE_URL" --model "$MODEL" --concurrency "$CONCURRENCY"
  VALID_ARGS+=(--valid-pneg "$OUT/pneg.dev.jsonl")
fi
nd-pneg build-candidates --train "$DDPP/train.json" "${VALID_ARGS[@]}" --test "$DDPP/test.json" \
  --sources "$SOURCES" --pneg "$OUT/pneg.train.jsonl" --out-dir "$OUT/candidates"

# 4. one fairseq ranker per source (sentence_ranking, small roberta from scratch), R@1 and MRR, beside
#    the shortcut baselines (shortest, longest, most overlap, random) and the candidates' lengths
# shellcheck disable=SC2086
nd-pneg rank-benchmark --candidates "$OUT/candidates" --work-dir "$OUT/rankers" $RANK_ARGS
cat "$OUT/rankers/report.md"

# 5. negatives for the Negative Distillation training pairs: line i = JSON list for pair i
if [ -n "$ND_TRAIN" ]; then
  nd-pneg generate --examples "$DDPP/train.json" --input "$ND_TRAIN" \
    --output "$OUT/pneg.nd-train.jsonl" --base-url "$BASE_URL" --model "$MODEL" --concurrency "$CONCURRENCY"
  nd-pneg export-negatives --input "$ND_TRAIN" --generated "$OUT/pneg.nd-train.jsonl" \
    --output "$ND_TRAIN.negatives.jsonl"
fi
