#!/usr/bin/env bash
# The README's main job: Negative Distillation end to end on chitchat-dataset (installed with pip,
# no download), sized to finish in about 20 minutes on a 2-core CPU. Options: see
# examples/pipeline.sh --help (e.g. --scale paper --fp16 on a GPU).
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/../pipeline.sh" --work work/chitchat "$@"
