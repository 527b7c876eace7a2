#!/usr/bin/env bash
# The GPU figures of leaderboard/PERFORMANCE.md and methods/unictokens/README.md on a lent GPU machine.
# Here first: tools/device/fetch_wheels.sh; then, through the device tool,
#   run(command="bash tools/device/gpu_checks.sh [STEP ...]", carry=[".whl"], timeout_s=...)
# STEPs (default: all, in this order), with rough durations on an H100/H200 and the limit each gets:
#   fidelity_jpg (~1 min, 150 s)  fidelity_png (~1 min, 150 s)  generation (Janus, ~3 min, 300 s)
#   personalize (Janus, ~2 min, 240 s)  showo_generation (~3 min, 300 s: MaskGIT and cached understanding)
#   showo_personalize (~3 min, 300 s)  sd_generation (textual inversion on SD 1.5-sized random weights,
#   ~2 min, 240 s)  yollava_personalize (the tiny LLaVA on CUDA in bf16: the path, not a figure; ~1 min, 120 s)
#   yochameleon_generation (Chameleon-7B-sized random weights, bf16: 4 images one per call against 4 in one
#   call, 1,024 tokens each; ~4 min, 360 s)  yochameleon_personalize (the same model, one epoch on the
#   bundled dog: 75 steps of 4 conversations; ~3 min, 300 s)
#   Asked for by name only: rap_answers (RAP-LLaVA-13B converted from the original LLaVA format once, then
#   loaded in fp16, answering mini-bench rec, choice and caption items of two concepts; needs
#   Hoar012/RAP-LLaVA-13b and openai/clip-vit-large-patch14-336 in the machine's HF cache, or RAP_MODEL=DIR
#   RAP_TOWER=DIR; ~6 min, 540 s)
# They do not all fit one 10-minute call: leaderboard/PERFORMANCE.md lists the calls, each with a few
# steps, made while the machine is still warm (it goes back 30 s after a call). Each step's log
# lands in $OUT and its last line (the JSON) is echoed; a failing step does not stop the others.
# The settings below can be overridden for a dry run on a CPU, e.g.
#   OUT=/tmp/gc PY=.venv/bin/python DEVICE=cpu N_JPG=64 N_PNG=64 DISTINCT=16 NAIVE_N=16 GEN_MODEL=tiny GEN_BATCH=2 \
#   PERS_MODEL=tiny PERS_EPOCHS=1 YC_MODEL=tiny bash tools/device/gpu_checks.sh
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/gpu-checks}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
# Enough files for the GPU pipeline's seconds to dwarf its start-up, drawn from fewer distinct images.
N_JPG=${N_JPG:-32768} N_PNG=${N_PNG:-8192} DISTINCT=${DISTINCT:-1024} NAIVE_N=${NAIVE_N:-512}
GEN_MODEL=${GEN_MODEL:-random-1b} GEN_BATCH=${GEN_BATCH:-32}
PERS_MODEL=${PERS_MODEL:-random-1b} PERS_EPOCHS=${PERS_EPOCHS:-20}
SHOWO_MODEL=${SHOWO_MODEL:-random} SHOWO_BATCH=${SHOWO_BATCH:-32} SHOWO_STEPS=${SHOWO_STEPS:-50}
SHOWO_EPOCHS=${SHOWO_EPOCHS:-5}
SD_MODEL=${SD_MODEL:-random} SD_BATCH=${SD_BATCH:-8} SD_STEPS=${SD_STEPS:-50}
YL_MODEL=${YL_MODEL:-tiny} YL_EPOCHS=${YL_EPOCHS:-2}
YC_MODEL=${YC_MODEL:-random} YC_BATCH=${YC_BATCH:-4} YC_EPOCHS=${YC_EPOCHS:-1}
RAP_MODEL=${RAP_MODEL:-Hoar012/RAP-LLaVA-13b} RAP_TOWER=${RAP_TOWER:-openai/clip-vit-large-patch14-336}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "cannot install the carried wheels (run tools/device/fetch_wheels.sh here first)"; exit 3; }
# The benchmarks find methods through the registry (entry points): install this tree, adapters included.
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . \
  || { echo "cannot install this tree (setuptools missing?)"; exit 3; }
export PYTHONPATH=/tmp/site
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import sys, torch, torchvision, transformers, open_clip; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__, \
'open_clip', open_clip.__version__, 'cpus', len(__import__('os').sched_getaffinity(0)))"; } | tee "$OUT/versions.txt"

step() {  # step NAME SECONDS ARGS...: python -m unifybench.bench ARGS with a limit; log kept, JSON echoed
  local name=$1 limit=$2; shift 2
  echo "== $name: python -m unifybench.bench $*"
  timeout "$limit" "$PY" -m unifybench.bench "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$? $(tail -n 1 "$OUT/$name.log")"
}
for name in "${@:-fidelity_jpg fidelity_png generation personalize showo_generation showo_personalize sd_generation yollava_personalize yochameleon_generation yochameleon_personalize}"; do
  for one in $name; do
    case $one in
      fidelity_jpg) step fidelity_jpg 150 fidelity --device "$DEVICE" --format jpg --n "$N_JPG" \
                      --distinct "$DISTINCT" --naive-n "$NAIVE_N" ;;
      fidelity_png) step fidelity_png 150 fidelity --device "$DEVICE" --format png --n "$N_PNG" \
                      --distinct "$DISTINCT" --naive-n "$NAIVE_N" ;;
      generation) step generation 300 generation --method unictokens --backend janus --model "$GEN_MODEL" \
                    --batch "$GEN_BATCH" --device "$DEVICE" ;;
      personalize) step personalize 240 personalize --method unictokens --backend janus --model "$PERS_MODEL" \
                     --epochs "$PERS_EPOCHS" --device "$DEVICE" ;;
      showo_generation) step showo_generation 300 generation --method unictokens --backend showo \
                          --model "$SHOWO_MODEL" --batch "$SHOWO_BATCH" --steps "$SHOWO_STEPS" --device "$DEVICE" ;;
      showo_personalize) step showo_personalize 300 personalize --method unictokens --backend showo \
                           --model "$SHOWO_MODEL" --epochs "$SHOWO_EPOCHS" --device "$DEVICE" ;;
      sd_generation) step sd_generation 240 generation --method textual-inversion --model "$SD_MODEL" \
                       --batch "$SD_BATCH" --steps "$SD_STEPS" --device "$DEVICE" ;;
      yollava_personalize) step yollava_personalize 120 personalize --method yollava --model "$YL_MODEL" \
                             --epochs "$YL_EPOCHS" --device "$DEVICE" ;;
      yochameleon_generation) step yochameleon_generation 360 generation --method yochameleon --model "$YC_MODEL" \
                                --batch "$YC_BATCH" --device "$DEVICE" ;;
      yochameleon_personalize) step yochameleon_personalize 300 personalize --method yochameleon \
                                 --model "$YC_MODEL" --epochs "$YC_EPOCHS" --device "$DEVICE" ;;
      rap_answers) echo "== rap_answers: python -m unifybench run --method rap (model $RAP_MODEL)"
                   timeout 540 "$PY" -m unifybench run --method rap --method-arg "model=$RAP_MODEL" \
                     --method-arg "vision_tower=$RAP_TOWER" --method-arg "converted=$OUT/rap-converted" \
                     --device "$DEVICE" --tasks rec,choice,caption --concepts dog,cat --limit 2 --backbones tiny \
                     --out "$OUT/rap" --json > "$OUT/rap_answers.log" 2>&1
                   echo "rc=$? $(tail -n 1 "$OUT/rap_answers.log")" ;;
      *) echo "unknown step $one (fidelity_jpg, fidelity_png, generation, personalize, showo_generation,"\
              "showo_personalize, sd_generation, yollava_personalize, yochameleon_generation,"\
              "yochameleon_personalize, rap_answers)"; exit 2 ;;
    esac
  done
done
