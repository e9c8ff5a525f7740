#!/usr/bin/env bash
# Negative Distillation end to end, for any corpus nd-prepare reads:
#
#   nd-prepare -> preprocess.sh (sentencepiece, source-entropy filter, fairseq-preprocess)
#   -> Standard (MLE) -> negative teacher (MLE on the top-50% entropy set)
#   -> recommended: ND as a fixed-α second phase of Standard, beside an MLE-only control,
#      α chosen on the validation set | paper: ND from scratch with the progressive α schedule
#   -> fairseq-generate -> nd-eval, sample replies, a verdict line
#   (--baselines ul nt face paper ablations: UL, NT, FACE, the paper recipe and the ablations
#   on the same base, shown beside ND)
#
# examples/chitchat/run.sh (the README's main job), examples/dailydialog/run.sh and
# examples/opensubtitles/run.sh call this with their settings; examples/recipe.py is the driver
# (examples/pipeline.sh --help lists every option). Every finished step is kept: rerunning
# the same command resumes.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for tool in nd-prepare nd-eval fairseq-train fairseq-generate; do
  command -v "$tool" >/dev/null || { echo "pipeline.sh: error: $tool is not on PATH; install first: pip install -e ." >&2; exit 2; }
done
exec python "$HERE/recipe.py" "$@"
