#!/usr/bin/env bash
# The README's main job: the recommended Negative Distillation recipe end to end on chitchat-dataset
# (installed with pip, no download), sized for about 30 minutes on 2 CPU cores. Options: see
# examples/pipeline.sh --help (e.g. --seeds 1 2 3, --recipe paper, --scale paper --fp16 on a GPU).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../pipeline.sh" --work work/chitchat "$@"
