#!/usr/bin/env bash
# The first thing to run whenever a GPU is available (CI never has one); under 5 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                    # CUDA: the checks below, summary table + JSON
#   bash benchmarks/gpu_check.sh --device cpu       # dry run of every part a CPU can run (small sizes)
#
# 1. components  every ND loss component, the total and the gradient norm on one fixed batch, CPU vs
#                CUDA, float32 with TF32 off (relative tolerance 1e-4)
# 2. train_*     fairseq-train ND (α fixed at 0.5: every term acts) for 200 updates at the paper
#                architecture (transformer_nd_dialog, 6+6 layers, 512) with --fp16, --bf16, --amp:
#                finite losses, the loss scale never below 1/8
# 3. bench_*     benchmarks/bench_step.py --device cuda --fp16 for the small and paper sizes: ND/MLE
#                step ratio, peak-memory ratio, updates/s
# 4. generate_*  fairseq-generate greedy and beam 5 on CUDA with the plugin: a hypothesis per sentence
#
# Data: a slice of chitchat-dataset (nd-prepare + preprocess.sh), and a negative teacher of the same
# architecture trained for a few updates; both under --work-dir (reused with --reuse).
# With --device cpu: tiny architecture, few updates, float32 training (fairseq's --fp16/--bf16/--amp
# trainers need CUDA: skipped, and labelled so), bench_step in bf16 on the CPU.
# Exit status: 0 when every part passed, 1 when any failed, 2 on a usage error.
set -u

DEVICE=cuda
WORK=""
UPDATES=""
REUSE=0
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; echo "options: --device cuda|cpu  --work-dir DIR  --updates N  --reuse"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="${2:-}"; shift 2 ;;
        --work-dir) WORK="${2:-}"; shift 2 ;;
        --updates) UPDATES="${2:-}"; shift 2 ;;
        --reuse) REUSE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1; see --help" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in
    cuda|cpu) ;;
    *) echo "gpu_check.sh: --device must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac
if [ -n "$UPDATES" ] && ! [[ "$UPDATES" =~ ^[1-9][0-9]*$ ]]; then
    echo "gpu_check.sh: --updates must be a positive integer, got '$UPDATES'" >&2; exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
HELPER="$REPO/benchmarks/gpu_check.py"
WORK="${WORK:-$REPO/work/gpu_check_$DEVICE}"
mkdir -p "$WORK/records"
rm -f "$WORK"/records/*.json
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

if [ "$DEVICE" = cuda ]; then
    if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "gpu_check.sh: no CUDA device visible to torch; run 'bash benchmarks/gpu_check.sh --device cpu' for the dry run" >&2
        exit 2
    fi
    ARCH=transformer_nd_dialog; UNITS=3000; VOCAB=8000; TEACHER_UPDATES=150; UPDATES="${UPDATES:-200}"
    MAX_TOKENS=8192; PRECISIONS="fp16 bf16 amp"; BENCH="small:fp16 paper:fp16"; BENCH_STEPS=""
    CPU_FLAG=""; LABEL=""; SKIPPED=""
else
    ARCH=transformer_nd_dialog_tiny; UNITS=300; VOCAB=600; TEACHER_UPDATES=8; UPDATES="${UPDATES:-6}"
    MAX_TOKENS=1500; PRECISIONS="fp32"; BENCH="tiny:bf16"; BENCH_STEPS="--steps 3"
    CPU_FLAG="--cpu"; LABEL="cpu dry run"
    SKIPPED="train_fp16,train_bf16,train_amp,bench_small_fp16,bench_paper_fp16"
fi
START=$(date +%s)
echo "== gpu_check: device $DEVICE, arch $ARCH, work dir $WORK"

# data and teacher (reused with --reuse when present)
DATA="$WORK/data-bin"
if [ "$REUSE" = 0 ] || [ ! -f "$DATA/full/dict.response.txt" ]; then
    rm -rf "$WORK/text" "$WORK/prep" "$DATA"
    echo "== data: nd-prepare (chitchat, $UNITS units) + preprocess.sh (vocabulary $VOCAB)"
    nd-prepare --out-dir "$WORK/text" --quiet --seed 3 --max-units "$UNITS" --valid-fraction 0.05 \
        --test-fraction 0.05 --max-test-pairs 200 || { echo "gpu_check.sh: nd-prepare failed" >&2; exit 1; }
    bash "$REPO/preprocess.sh" --text-dir "$WORK/text" --work-dir "$WORK/prep" --dest "$DATA" \
        --vocab-size "$VOCAB" --key prefix:3 --workers 2 > "$WORK/preprocess.log" 2>&1 \
        || { echo "gpu_check.sh: preprocess.sh failed, see $WORK/preprocess.log" >&2; exit 1; }
fi
TEACHER="$WORK/teacher/checkpoint_last.pt"
if [ "$REUSE" = 0 ] || [ ! -f "$TEACHER" ]; then
    rm -rf "$WORK/teacher"
    echo "== teacher: $TEACHER_UPDATES MLE updates on the negative set"
    fairseq-train "$DATA/negative" --user-dir "$REPO/nd_fairseq" --task negative_distillation --arch "$ARCH" \
        --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --optimizer adam --lr 5e-4 \
        --max-tokens "$MAX_TOKENS" --max-update "$TEACHER_UPDATES" --disable-validation --no-epoch-checkpoints \
        --no-progress-bar --log-interval 50 --save-dir "$WORK/teacher" $CPU_FLAG \
        $([ "$DEVICE" = cuda ] && echo --fp16) > "$WORK/teacher.log" 2>&1 \
        || { echo "gpu_check.sh: teacher training failed, see $WORK/teacher.log" >&2; exit 1; }
fi

EXPECT=""
part() {  # part NAME ARGS...: one record in $WORK/records/NAME.json (the helper never aborts the script)
    local name="$1"; shift
    EXPECT="$EXPECT,$name"
    "$PY" "$HELPER" "$@" --device "$DEVICE" --out "$WORK/records/$name.json" --label "$LABEL"
}

part components components --data "$DATA/full" --teacher "$TEACHER" --arch "$ARCH"
CKPT=""
for prec in $PRECISIONS; do
    part "train_$prec" train --data "$DATA/full" --teacher "$TEACHER" --arch "$ARCH" --precision "$prec" \
        --updates "$UPDATES" --max-tokens "$MAX_TOKENS" --save-dir "$WORK/nd_$prec"
    [ -z "$CKPT" ] && CKPT="$WORK/nd_$prec/checkpoint_last.pt"
done
for spec in $BENCH; do
    size="${spec%%:*}"; prec="${spec##*:}"
    part "bench_${size}_$prec" bench --size "$size" --precision "$prec" --work "$WORK" $BENCH_STEPS
done
part generate_greedy generate --data "$DATA/full" --checkpoint "$CKPT" --beam 1
part generate_beam5 generate --data "$DATA/full" --checkpoint "$CKPT" --beam 5

"$PY" "$HELPER" summary --device "$DEVICE" --dir "$WORK/records" --expect "${EXPECT#,}" --json "$WORK/gpu_check.json" \
    --skipped "$SKIPPED" --skip-reason "not run: fairseq's --fp16/--bf16/--amp trainers and fp16 benchmarks need CUDA"
STATUS=$?
if [ "$DEVICE" = cpu ]; then
    echo "cpu dry run: the component comparison ran CPU against CPU; the GPU run is still to come"
fi
echo "== gpu_check: $(( $(date +%s) - START )) s"
exit $STATUS
