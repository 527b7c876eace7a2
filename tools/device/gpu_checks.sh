#!/usr/bin/env bash
# The GPU figures of leaderboard/PERFORMANCE.md and the method cards, on a lent GPU machine, in one
# call of the device tool (tools/device/README.md gives the exact call and how to record the results).
#
#   bash tools/device/gpu_checks.sh [STEP ...]          # on the GPU machine (default: every step, in order)
#   STEPS="sd_generation generation" bash tools/device/gpu_checks.sh     # only these (a rerun of failed ones)
#   bash tools/device/gpu_checks.sh --cpu-dry-run [STEP ...]   # here, on the CPU, tiny sizes (or DRY_RUN=1)
#   INSTALL=1 bash tools/device/gpu_checks.sh --cpu-dry-run     # the same, on the carried wheels as the GPU
#   bash tools/device/gpu_checks.sh --list [STEP ...]   # each step's limit and command, nothing run
#
# Steps, in the order they run (what they tell us first), with the seconds each may take at most:
#   fidelity_jpg            scorer: nvJPEG decode + pinned-copy overlap vs the per-image loop (JPEG)
#   showo_generation        UniCTokens/Show-o: batched MaskGIT and cached understanding vs reference loops
#   sd_generation           textual inversion on SD 1.5-sized random weights: packed vs one request a call
#   generation              UniCTokens/Janus: static-cache (compiled) decoding vs eager `generate`
#   yochameleon_generation  Yo'Chameleon (Chameleon-7B-sized random weights): a prompt's images in one call vs one a call
#   fidelity_png            scorer on PNG (decode worker processes)
#   personalize             UniCTokens/Janus personalization, timed per stage
#   showo_personalize       UniCTokens/Show-o personalization, timed per stage
#   yollava_personalize     Yo'LLaVA on CUDA in bf16 (tiny model: the path, not a figure)
#   yochameleon_personalize Yo'Chameleon, Chameleon-7B-sized, one epoch: a full-size personalization per stage
#   rap_answers             RAP's LLaVA path in fp16 on random LLaVA-1.5-13B-sized weights, a few questions
#
# Every step prints exactly one JSON line, {"step", "rc", "step_s", "limit_s", "ok", "result" (the
# benchmark's own JSON line) | "error" (the last line of its log)}, also appended to
# $OUT/results.jsonl; its whole log is $OUT/<step>.log. A failing or timed-out step does not stop the
# others. The whole call has a budget (BUDGET seconds from the start, 420 on the GPU): each step
# gets the smaller of its own limit and what is left, and a step that would get less than MIN_STEP_S
# is not started ({"skipped": "budget"}). The first line is {"step": "machine", ...}: card, date,
# versions. Settings are environment variables (the defaults below); the dry run's sizes are tiny.
set -u
cd "$(dirname "$0")/../.."
ORDER="fidelity_jpg showo_generation sd_generation generation yochameleon_generation fidelity_png personalize
showo_personalize yollava_personalize yochameleon_personalize rap_answers"
DRY_RUN=${DRY_RUN:-0} LIST=0
while [ $# -gt 0 ]; do
  case $1 in
    --cpu-dry-run) DRY_RUN=1; shift ;;
    --list) LIST=1; shift ;;
    *) break ;;
  esac
done
STEPS=${STEPS:-${*:-$ORDER}}

if [ "$DRY_RUN" = 1 ]; then  # every step on the CPU, tiny models and sizes: the plumbing, not figures
  OUT=${OUT:-runs/gpu-checks-dry}
  if [ -x .venv/bin/python ]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
  DEVICE=cpu BUDGET=${BUDGET:-1800} SCALE=${SCALE:-3}  # the step limits are the GPU's, times SCALE
  N_JPG=${N_JPG:-32} N_PNG=${N_PNG:-32} DISTINCT=${DISTINCT:-8} NAIVE_N=${NAIVE_N:-8} FID_BACKBONES=${FID_BACKBONES:-tiny}
  GEN_MODEL=${GEN_MODEL:-tiny} GEN_BATCH=${GEN_BATCH:-2}
  PERS_MODEL=${PERS_MODEL:-tiny} PERS_EPOCHS=${PERS_EPOCHS:-1}
  SHOWO_MODEL=${SHOWO_MODEL:-tiny} SHOWO_BATCH=${SHOWO_BATCH:-2} SHOWO_STEPS=${SHOWO_STEPS:-4}
  SHOWO_QUESTIONS=${SHOWO_QUESTIONS:-2} SHOWO_NEW_TOKENS=${SHOWO_NEW_TOKENS:-4} SHOWO_EPOCHS=${SHOWO_EPOCHS:-1}
  SD_MODEL=${SD_MODEL:-tiny} SD_BATCH=${SD_BATCH:-2} SD_STEPS=${SD_STEPS:-2}
  YL_MODEL=${YL_MODEL:-tiny} YL_EPOCHS=${YL_EPOCHS:-1}
  YC_MODEL=${YC_MODEL:-tiny} YC_BATCH=${YC_BATCH:-2} YC_EPOCHS=${YC_EPOCHS:-1}
  RAP_MODEL=${RAP_MODEL:-tiny} RAP_NEW_TOKENS=${RAP_NEW_TOKENS:-4}
  INSTALL=${INSTALL:-0}  # 1: install the carried wheels and this tree into $SITE first, as on the GPU
  SITE=${SITE:-${TMPDIR:-/tmp}/gpu-checks-site}
else
  OUT=${OUT:-runs/gpu-checks}
  PY=${PY:-python3}
  DEVICE=${DEVICE:-cuda} BUDGET=${BUDGET:-420} SCALE=1
  # Enough files for the GPU pipeline's seconds to dwarf its start-up, drawn from fewer distinct images.
  N_JPG=${N_JPG:-32768} N_PNG=${N_PNG:-8192} DISTINCT=${DISTINCT:-1024} NAIVE_N=${NAIVE_N:-512}
  FID_BACKBONES=${FID_BACKBONES:-random}
  GEN_MODEL=${GEN_MODEL:-random-1b} GEN_BATCH=${GEN_BATCH:-32}
  PERS_MODEL=${PERS_MODEL:-random-1b} PERS_EPOCHS=${PERS_EPOCHS:-20}
  # Show-o's understanding comparison: 16 questions of 48 tokens (the cache-less loop runs twice; at the
  # benchmark's default, 32 of 100, it alone would take minutes).
  SHOWO_MODEL=${SHOWO_MODEL:-random} SHOWO_BATCH=${SHOWO_BATCH:-32} SHOWO_STEPS=${SHOWO_STEPS:-50}
  SHOWO_QUESTIONS=${SHOWO_QUESTIONS:-16} SHOWO_NEW_TOKENS=${SHOWO_NEW_TOKENS:-48} SHOWO_EPOCHS=${SHOWO_EPOCHS:-5}
  SD_MODEL=${SD_MODEL:-random} SD_BATCH=${SD_BATCH:-8} SD_STEPS=${SD_STEPS:-50}
  YL_MODEL=${YL_MODEL:-tiny} YL_EPOCHS=${YL_EPOCHS:-2}
  YC_MODEL=${YC_MODEL:-random} YC_BATCH=${YC_BATCH:-4} YC_EPOCHS=${YC_EPOCHS:-1}
  RAP_MODEL=${RAP_MODEL:-random-13b} RAP_NEW_TOKENS=${RAP_NEW_TOKENS:-32}
  INSTALL=${INSTALL:-1} SITE=${SITE:-/tmp/site}
fi
MIN_STEP_S=${MIN_STEP_S:-30}

# step_cmd NAME: sets LIMIT (seconds on the GPU) and CMD (python's arguments after $PY) for one step.
step_cmd() {
  local D=(--device "$DEVICE")
  case $1 in
    fidelity_jpg) LIMIT=120 CMD=(-m unifybench.bench fidelity "${D[@]}" --format jpg --n "$N_JPG" --distinct "$DISTINCT"
                    --naive-n "$NAIVE_N" --backbones "$FID_BACKBONES") ;;
    showo_generation) LIMIT=150 CMD=(-m unifybench.bench generation --method unictokens --backend showo
                        --model "$SHOWO_MODEL" --batch "$SHOWO_BATCH" --steps "$SHOWO_STEPS"
                        --questions "$SHOWO_QUESTIONS" --max-new-tokens "$SHOWO_NEW_TOKENS" "${D[@]}") ;;
    sd_generation) LIMIT=90 CMD=(-m unifybench.bench generation --method textual-inversion --model "$SD_MODEL"
                     --batch "$SD_BATCH" --steps "$SD_STEPS" "${D[@]}") ;;
    generation) LIMIT=150 CMD=(-m unifybench.bench generation --method unictokens --backend janus --model "$GEN_MODEL"
                  --batch "$GEN_BATCH" "${D[@]}") ;;
    yochameleon_generation) LIMIT=150 CMD=(-m unifybench.bench generation --method yochameleon --model "$YC_MODEL"
                              --batch "$YC_BATCH" "${D[@]}") ;;
    fidelity_png) LIMIT=90 CMD=(-m unifybench.bench fidelity "${D[@]}" --format png --n "$N_PNG" --distinct "$DISTINCT"
                    --naive-n "$NAIVE_N" --backbones "$FID_BACKBONES") ;;
    personalize) LIMIT=120 CMD=(-m unifybench.bench personalize --method unictokens --backend janus
                   --model "$PERS_MODEL" --epochs "$PERS_EPOCHS" "${D[@]}") ;;
    showo_personalize) LIMIT=150 CMD=(-m unifybench.bench personalize --method unictokens --backend showo
                         --model "$SHOWO_MODEL" --epochs "$SHOWO_EPOCHS" "${D[@]}") ;;
    yollava_personalize) LIMIT=60 CMD=(-m unifybench.bench personalize --method yollava --model "$YL_MODEL"
                           --epochs "$YL_EPOCHS" "${D[@]}") ;;
    yochameleon_personalize) LIMIT=180 CMD=(-m unifybench.bench personalize --method yochameleon --model "$YC_MODEL"
                               --epochs "$YC_EPOCHS" "${D[@]}") ;;
    rap_answers) LIMIT=180 CMD=(-m unifybench run --method rap --method-arg "model=$RAP_MODEL"
                   --method-arg "max_new_tokens=$RAP_NEW_TOKENS" --tasks rec,choice,caption --concepts dog,cat
                   --limit 2 --backbones tiny "${D[@]}" --out "$OUT/rap" --json) ;;
    *) return 1 ;;
  esac
  LIMIT=$((LIMIT * SCALE))
}

for one in $STEPS; do  # refuse unknown names before anything runs
  step_cmd "$one" || { echo "unknown step $one (known: $(echo $ORDER))" >&2; exit 2; }
done
if [ "$LIST" = 1 ]; then  # one line a step: NAME LIMIT_S ARG... (shell-quoted), for tests and readers
  for one in $STEPS; do step_cmd "$one"; printf '%s %s' "$one" "$LIMIT"; printf ' %q' "${CMD[@]}"; echo; done
  exit 0
fi

START=$SECONDS
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ "$INSTALL" = 1 ]; then
  # The machine's image lacks open_clip and diffusers, its transformers may be older and its setuptools
  # too old for this tree (>= 77): the wheels carried in .whl/ (tools/device/fetch_wheels.sh, run here
  # first) go into $SITE, then this tree (the benchmarks find methods through the registry's entry
  # points), built by the carried setuptools. A missing wheel fails only the steps that need it.
  rm -rf "$SITE" && mkdir -p "$SITE"
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
  if ls .whl/*.whl > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      || echo "note: cannot install the carried wheels" >&2
  else
    echo "note: no .whl/*.whl carried (tools/device/fetch_wheels.sh): steps needing open_clip or diffusers fail" >&2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" . \
    > "$OUT/install.log" 2>&1 || { echo "note: cannot install this tree: $OUT/install.log" >&2; tail -n 5 "$OUT/install.log" >&2; }
fi
"$PY" tools/device/step_line.py machine --device "$DEVICE" --dry-run "$DRY_RUN" --budget "$BUDGET" \
  | tee -a "$OUT/results.jsonl"

for one in $STEPS; do
  step_cmd "$one"
  left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt "$MIN_STEP_S" ]; then
    "$PY" tools/device/step_line.py "$one" --skipped budget --limit 0 | tee -a "$OUT/results.jsonl"
    continue
  fi
  [ "$left" -lt "$LIMIT" ] && LIMIT=$left
  echo "== $one (limit ${LIMIT} s): python$(printf ' %q' "${CMD[@]}")" > "$OUT/$one.log"
  t0=$SECONDS
  timeout -k 10 "$LIMIT" "$PY" "${CMD[@]}" >> "$OUT/$one.log" 2>&1
  rc=$?
  "$PY" tools/device/step_line.py "$one" --rc "$rc" --seconds $((SECONDS - t0)) --limit "$LIMIT" \
    --log "$OUT/$one.log" | tee -a "$OUT/results.jsonl"
done
