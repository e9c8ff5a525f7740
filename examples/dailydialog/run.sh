#!/usr/bin/env bash
# The paper's DailyDialog setting (§3.2, Appendix A): 6+6-layer transformer (512, 8 heads, FFN 2048),
# batch 256, Adam with Eq. 17's learning rate (= fairseq inverse_sqrt with peak 2/sqrt(512 * 128000)
# = 2.47e-4 and 128k warm-up steps from 0), λ = 4, γ = 25600, t = 1, label smoothing 0.1, greedy.
#
#   bash examples/dailydialog/run.sh /path/to/ijcnlp_dailydialog/dialogues_text.txt [pipeline options]
#
# DailyDialog is not redistributed here; download it from its authors. With the official
# train/validation/test folders give --valid-input .../dialogues_validation.txt and --test-input
# .../dialogues_test.txt after the training file.
set -euo pipefail
[[ $# -ge 1 && -f "$1" ]] || { echo "usage: $0 DIALOGUES_TEXT_TXT [pipeline options]" >&2; exit 2; }
input=$1; shift
exec bash "$(dirname "${BASH_SOURCE[0]}")/../pipeline.sh" --format dailydialog --input "$input" \
  --work work/dailydialog --recipe paper --scale paper --batch-size 256 --max-tokens 16384 --lr 2.47e-4 --warmup 128000 \
  --updates 150000 --alpha-lambda 4 --alpha-gamma 25600 --key normalized --fp16 "$@"
