#!/usr/bin/env bash
# GPU figures in one go (issue 29, item 4): extraction (clips/s, 10-s 1080p), predict (s/clip), training (frames/s,
# bf16 + channels_last + torch.compile) and the backbone table, in under 8 minutes on one GPU; the figures go into
# bench/README.md under a heading naming the card and the date.
#
#     bash bench/gpu.sh                      # on a machine with a CUDA GPU, from the repository root
#     bash bench/gpu.sh --dry-run            # the same plumbing on the CPU with tiny settings (seconds, not figures)
#     bash bench/gpu.sh --readme OTHER.md    # write the section elsewhere (the dry run writes to a temporary file)
#
# Time limits per step (140 + 110 + 90 + 140 s) keep the whole under 8 minutes plus start-up.
# Fails loudly: any step that exits non-zero, runs past its time limit, reports a device other than the GPU, or
# prints a fallback (a batch that went on file by file, a CUDA error, a worker that died) stops the script with
# "bench/gpu.sh: FAILED: <step>: <why>" and exit status 1; nothing is written to the README then.
set -euo pipefail

DRY=0
README=bench/README.md
PY=${PYTHON:-python}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --readme) README=$2; shift ;;
        *) echo "bench/gpu.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

OUT=$(mktemp -d "${TMPDIR:-/tmp}/bench-gpu.XXXXXX")
export DEEPFAKE_CACHE=$OUT/cache   # ONNX copies and MTCNN's ONNX nets: never the user's cache
START=$(date +%s)

fail() { echo "bench/gpu.sh: FAILED: $1: $2" >&2; echo "logs in $OUT" >&2; exit 1; }

# A step: its name, a time limit in seconds, then the command; stdout+stderr to $OUT/<name>.log.
step() {
    local name=$1 limit=$2; shift 2
    local t0=$(date +%s)
    echo "bench/gpu.sh: $name ..." >&2
    if ! timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        tail -n 30 "$OUT/$name.log" >&2
        fail "$name" "exit status non-zero or past ${limit} s (command: $*)"
    fi
    # A CUDA path that quietly degraded is a failure too.
    if grep -E -n "CUDA error|CUBLAS_STATUS|cudnn.*(error|ERROR)|out of memory|going on file by file|falling back to the CPU|Traceback" \
            "$OUT/$name.log" >&2; then
        fail "$name" "its log shows an error of the CUDA path (above)"
    fi
    echo "bench/gpu.sh: $name done in $(( $(date +%s) - t0 )) s" >&2
}

if [ "$DRY" = 1 ]; then
    DEVICE=cpu
    CARD="dry run on the CPU (no figures)"
    [ "$README" = bench/README.md ] && README=$OUT/README.md && cp bench/README.md "$README"
    EXTRACT=(--count 2 --seconds 1 --resolution 320x240 --copies 1 --workers 1)
    PREDICT=(--backbone test_efficientnet --seq-len 4 --resolution 320x240 --seconds 1 --clips 2 --workers 1 --repeat 1)
    TRAIN=(--backbone test_efficientnet --img-size 64 --seq-len 4 --batch-size 1 --steps 1 --warmup 0)
    BACKBONES=(--models test_efficientnet --img-size 64 --seq-len 2 --batch-size 1 --steps 1 --warmup 0 --repeat 1)
    AMP=(--no-amp)
    COMPILE=()
else
    command -v nvidia-smi >/dev/null || fail "setup" "nvidia-smi not found: this script needs a CUDA GPU (--dry-run: CPU)"
    CARD=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)
    DEVICE=cuda
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || fail "setup" "torch sees no CUDA GPU (card: $CARD)"
    EXTRACT=(--count 4 --seconds 10 --resolution 1920x1080 --copies 6 --workers 15)
    PREDICT=(--clips 16 --workers 4 --repeat 3)
    TRAIN=(--steps 20)
    BACKBONES=(--steps 5 --warmup 2 --repeat 1)
    AMP=(--amp)
    COMPILE=(--compile)
fi
echo "bench/gpu.sh: $CARD; logs in $OUT" >&2

step extract 140 "$PY" bench/extract.py --mode throughput --device "$DEVICE" --skip-throughput-reuse \
    --work "$OUT/extract" "${EXTRACT[@]}"
step predict 110 "$PY" bench/predict.py --device "$DEVICE" --no-explain --out "$OUT/predict.json" \
    --data "$OUT/predict" "${PREDICT[@]}"
step train 90 "$PY" bench/train.py --device "$DEVICE" "${AMP[@]}" "${COMPILE[@]}" --no-loader \
    --json "$OUT/train.json" "${TRAIN[@]}"
step backbones 140 "$PY" bench/backbones.py --device "$DEVICE" --amp "$([ "$DRY" = 1 ] && echo none || echo bf16)" \
    --channels-last --json "$OUT/backbones.json" "${BACKBONES[@]}"

SECONDS_ALL=$(( $(date +%s) - START ))
"$PY" - "$OUT" "$README" "$CARD" "$DEVICE" "$SECONDS_ALL" <<'EOF' || fail "report" "the figures could not be read or written"
"""Read the steps' outputs, check they ran where asked, and write the README section."""
import json, re, sys, time
from pathlib import Path

out, readme, card, device, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
extract = re.search(r"= ([\d.]+) clips/s \((\d+) workers, status (\d+)\)", (out / "extract.log").read_text())
if not extract or extract.group(3) != "0":
    sys.exit("extract: no throughput line with status 0 in its log")
predict = json.loads((out / "predict.json").read_text())
train = json.loads((out / "train.json").read_text())
backbones = (out / "backbones.log").read_text()
table = "\n".join(line for line in backbones.splitlines() if line.startswith("|"))
if not str(predict.get("device", "")).startswith(device):
    sys.exit(f"predict ran on {predict.get('device')!r}, not {device}")
if str(train.get("device", "")).startswith("CPU") != (device == "cpu"):  # train names the card, or "CPU (...)"
    sys.exit(f"train ran on {train.get('device')!r}, not {device}")
folder = predict.get("folder") or {}
model = train.get("model", {})
frames_s = model.get("frames_per_s") or model.get("frames/s") or model.get("frames_s")
rows = [
    ("extraction, 10-s 1080p clips (`deepfake-extract`, GPU detection)", f"{float(extract.group(1)):.2f} clips/s",
     ">= 20 clips/s"),
    ("predict, one 10-s 1080p clip end to end", f"{predict['end_to_end_s']:.3f} s/clip", "< 0.3 s/clip"),
    ("predict, folder", f"{folder.get('clips_per_s', float('nan')):.2f} clips/s", ""),
    ("training, B1 + LSTM, bf16 + channels_last + compile", f"{float(frames_s):.0f} frames/s", ">= 3000 frames/s"),
]
date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
section = [f"## GPU figures: {card} ({date}, `bash bench/gpu.sh`, {seconds} s in all)", "",
           "| what | measured | target (issue 29) |", "|---|---|---|"]
section += [f"| {a} | {b} | {c} |" for a, b, c in rows]
section += ["", "Backbones (`bench/backbones.py --amp bf16 --channels-last`):", "", table or "(no table)", ""]
text = readme.read_text() if readme.is_file() else ""
readme.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section))
print("\n".join(section))
EOF
echo "bench/gpu.sh: figures written to $README ($SECONDS_ALL s)" >&2
