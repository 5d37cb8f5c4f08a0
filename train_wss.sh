#!/usr/bin/env bash
# Train and test scribble-supervised methods over folds, then print one table.
#
#   bash train_wss.sh                       # main job: phantoms -> MaskMixAdv, fold1, CPU quick protocol
#   bash train_wss.sh --methods "pce dmpls maskmixadv" --folds all --root data/ACDC \
#        --iters 60000 --patch 256 --batch 12 --amp off     # the paper protocol
#   bash train_wss.sh ... -- --shape_prior ../MSCMR/val/labels   # extra flags go to every run
#
# A run that already exists is resumed (a finished one is only re-tested). When several CUDA GPUs
# are visible, runs are spread over them, one run per GPU at a time.
set -euo pipefail
cd "$(dirname "$0")"

methods="maskmixadv"
folds="fold1"
root="data/ACDC_phantom"
iters=800
patch=96
batch=8
amp=bf16
val=200
exp_prefix=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods="$2"; shift 2 ;;
    --folds) folds="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --iters) iters="$2"; shift 2 ;;
    --patch) patch="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --amp) amp="$2"; shift 2 ;;
    --val) val="$2"; shift 2 ;;
    --exp_prefix) exp_prefix="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "train_wss.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$folds" = all ] && folds="fold1 fold2 fold3 fold4 fold5"
PY=${PYTHON:-python3}

if [ ! -d "$root/ACDC_training_volumes" ]; then
  if [ "$root" = data/ACDC_phantom ]; then
    $PY code/make_phantoms.py --out "$root" --patients 20 --seed 0
  else
    echo "train_wss.sh: --root $root has no ACDC_training_volumes folder" >&2; exit 2
  fi
fi

ngpu=$($PY -c "import torch; print(torch.cuda.device_count())")
mkdir -p model/results
run_one() {  # method fold [gpu]
  local m=$1 f=$2 exp="${exp_prefix}$1" resume=() gpu=()
  [ -n "${3:-}" ] && gpu=(env "CUDA_VISIBLE_DEVICES=$3")
  local sup
  sup=$($PY -c "import sys; sys.path.insert(0, 'code'); from methods import get_method; print(get_method('$m').sup_type)")
  [ -f "model/${exp}_${f}/${sup}/last.pth" ] && resume=(--resume)
  "${gpu[@]}" $PY code/train.py --method "$m" --exp "$exp" \
    --root_path "$root" --fold "$f" --max_iterations "$iters" --patch_size "$patch" "$patch" \
    --batch_size "$batch" --amp "$amp" --val_interval "$val" "${resume[@]}" "${extra[@]}"
  "${gpu[@]}" $PY code/test_2D_fully.py --root_path "$root" \
    --fold "$f" --exp "$exp" --sup_type "$sup" --out_json "model/results/${exp}_${f}.json"
}

jobs_=()
for m in $methods; do for f in $folds; do jobs_+=("$m $f"); done; done
if [ "$ngpu" -gt 1 ]; then
  i=0
  for j in "${jobs_[@]}"; do
    run_one $j $((i % ngpu)) > "model/results/$(echo "$j" | tr ' ' _).log" 2>&1 &
    i=$((i + 1))
    [ $((i % ngpu)) -eq 0 ] && wait
  done
  wait
else
  for j in "${jobs_[@]}"; do run_one $j; done
fi

$PY code/summarize_results.py --results model/results --methods $methods --folds $folds \
  --exp_prefix "$exp_prefix"
