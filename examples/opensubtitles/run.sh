#!/usr/bin/env bash
# The paper's OpenSubtitles setting: as DailyDialog but 256k warm-up steps (Eq. 17 peak
# 2/sqrt(512 * 256000) = 1.75e-4). OpenSubtitles is not redistributed; give single-turn pairs as
# two aligned files (query, response), one utterance per line:
#
#   bash examples/opensubtitles/run.sh QUERY_FILE RESPONSE_FILE [pipeline options]
set -euo pipefail
[[ $# -ge 2 && -f "$1" && -f "$2" ]] || { echo "usage: $0 QUERY_FILE RESPONSE_FILE [pipeline options]" >&2; exit 2; }
q=$1; r=$2; shift 2
exec bash "$(dirname "${BASH_SOURCE[0]}")/../pipeline.sh" --format parallel --input "$q" --response-input "$r" \
  --work work/opensubtitles --recipe paper --scale paper --batch-size 256 --max-tokens 16384 --lr 1.75e-4 --warmup 256000 \
  --updates 300000 --alpha-lambda 4 --alpha-gamma 25600 --key normalized --fp16 "$@"
