#!/usr/bin/env bash
# Train and test scribble-supervised methods over folds, then print one table.
#
#   bash train_wss.sh                       # main job: phantoms -> MaskMixAdv, fold1, CPU quick protocol
#   bash train_wss.sh --root data/ACDC --protocol quick   # ACDC fold1, <= 30 min of training on 2 CPU cores
#   bash train_wss.sh --root data/ACDC --protocol long --tta on   # <= 2.5 hours on 2 CPU cores
#   bash train_wss.sh --methods "pce dmpls maskmixadv" --folds all --root data/ACDC \
#        --protocol paper                                  # 256x256, batch 12, 60000 iterations (GPU)
#   bash train_wss.sh ... --args maskmixadv "--shape_prior MSCMR/val/labels"   # one method's flags
#   bash train_wss.sh ... -- --seed 1       # flags after -- go to every run
#
# A flag goes either in one method's --args or after --, not both; patch and input sizes go
# through --patch and --input. --iters, --patch, --input, --batch, --amp and --val, wherever
# given, win over a --protocol's values. --tta on scores with test-time flips (test_2D_fully.py
# --tta; default off). A run that already exists is resumed (a finished one is
# only re-tested). When several CUDA GPUs are visible, runs are spread over them, one run per GPU
# at a time. Paths are the caller's: model/ (and the default phantoms under data/) are written in
# the current directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"  # the scripts; the caller's relative paths stay the caller's

methods="maskmixadv"
folds="fold1"
phantoms="data/ACDC_phantom"
root="$phantoms"
iters=800
patch=96
input=""
batch=8
amp=auto
val=200
exp_prefix=""
protocol=""
tta=off
extra=()
declare -A method_args=() given=()
while [ $# -gt 0 ]; do
  # Every option but --, -h and --help takes a value (--args two): a missing one is named here.
  case "$1" in --args) need=3 ;; --|-h|--help) need=1 ;; *) need=2 ;; esac
  [ $# -ge $need ] || { echo "train_wss.sh: $1 needs $((need - 1)) value(s)" >&2; exit 2; }
  case "$1" in
    --methods) methods="$2"; shift 2 ;;
    --folds) folds="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --iters) iters="$2"; given[iters]=1; shift 2 ;;
    --patch) patch="$2"; given[patch]=1; shift 2 ;;
    --input) input="$2"; given[input]=1; shift 2 ;;
    --protocol) protocol="$2"; shift 2 ;;
    --batch) batch="$2"; given[batch]=1; shift 2 ;;
    --amp) amp="$2"; given[amp]=1; shift 2 ;;
    --val) val="$2"; given[val]=1; shift 2 ;;
    --exp_prefix) exp_prefix="$2"; shift 2 ;;
    --tta) tta="$2"; shift 2 ;;
    --args)
      [ -z "${method_args[$2]+set}" ] || { echo "train_wss.sh: --args $2 given twice (put its flags in one)" >&2; exit 2; }
      method_args[$2]="$3"; shift 3 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "train_wss.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
budget() {  # name value: a --protocol's value, unless the flag was given (before or after it)
  [ -n "${given[$1]:-}" ] || printf -v "$1" '%s' "$2"
}
case "$protocol" in  # named budgets
  "") ;;
  quick) budget iters 2000; budget patch 128; budget input ""; budget batch 8; budget amp auto; budget val 250 ;;
  long) budget iters 9000; budget patch 128; budget input ""; budget batch 8; budget amp auto; budget val 500 ;;
  paper) budget iters 60000; budget patch 256; budget input ""; budget batch 12; budget amp off; budget val 200 ;;
  *) echo "train_wss.sh: --protocol must be quick, long or paper, got $protocol" >&2; exit 2 ;;
esac
case "$tta" in on|off) ;; *) echo "train_wss.sh: --tta must be on or off, got $tta" >&2; exit 2 ;; esac
[ "$folds" = all ] && folds="fold1 fold2 fold3 fold4 fold5"
for list in "$methods" "$folds"; do  # a repeat would train twice and then fail the summary
  repeated=$(tr -s ' ' '\n' <<< "$list" | sed '/^$/d' | sort | uniq -d | head -1)
  [ -z "$repeated" ] || { echo "train_wss.sh: $repeated given twice (--methods / --folds)" >&2; exit 2; }
done
for m in "${!method_args[@]}"; do  # flags for a method that does not run (a typo) were dropped
  [[ " $(tr -s ' ' <<< " $methods ") " == *" $m "* ]] || {
    echo "train_wss.sh: --args $m: $m is not in --methods ($methods)" >&2; exit 2; }
done
for a in ${method_args[@]+${method_args[@]}} ${extra[@]+"${extra[@]}"}; do  # the words of each --args
  # The script names each run's folder and result itself: another one trained elsewhere than it tests.
  case "$a" in --exp|--exp=*|--out_dir|--out_dir=*|--fold|--fold=*|--root_path|--root_path=*)
    echo "train_wss.sh: ${a%%=*} in --args or after --: use --exp_prefix, --folds or --root" >&2; exit 2 ;;
  --method|--method=*)  # one method's run would train another in its folder
    echo "train_wss.sh: --method in --args or after --: use --methods" >&2; exit 2 ;;
  --patch_size|--patch_size=*|--input_size|--input_size=*)  # the script passes both: one alone trained on crops
    echo "train_wss.sh: ${a%%=*} in --args or after --: use --patch and --input" >&2; exit 2 ;;
  esac
done
flag_names() {  # words: the --flags among them, one per line (--no-X as --X: argparse's pair of one flag)
  local w
  for w in "$@"; do [[ $w == --* ]] && { w=${w%%=*}; w=${w#--}; echo "--${w#no-}"; }; done
  return 0
}
for m in "${!method_args[@]}"; do  # the later one won without a word
  read -ra own <<< "${method_args[$m]}"
  twice=$(comm -12 <(flag_names ${own[@]+"${own[@]}"} | sort -u) <(flag_names ${extra[@]+"${extra[@]}"} | sort -u) | head -1)
  [ -z "$twice" ] || { echo "train_wss.sh: $twice given in --args $m and after --; give it once" >&2; exit 2; }
done
PY=${PYTHON:-python3}

declare -A sup=()
while read -r m s; do sup[$m]=$s; done < <($PY -c "import sys; sys.path.insert(0, '$here/code')
from methods import METHODS
for name, cls in METHODS.items(): print(name, cls.sup_type)")
for m in $methods; do
  [ -n "${sup[$m]:-}" ] || { echo "train_wss.sh: unknown method $m (choose from: ${!sup[*]})" >&2; exit 2; }
done

if [ ! -d "$root/ACDC_training_volumes" ]; then
  if [ "$(realpath -m "$root")" = "$(realpath -m "$phantoms")" ]; then
    $PY "$here/code/make_phantoms.py" --out "$root" --patients 20 --seed 0
  else
    echo "train_wss.sh: --root $root has no ACDC_training_volumes folder" >&2; exit 2
  fi
fi

sup_of() {  # method: the supervision its run folder is named after (a --sup_type given decides it)
  local s=${sup[$1]} own=() i
  read -ra own <<< "${method_args[$1]:-}"
  local given=("${own[@]}" "${extra[@]}")
  for i in "${!given[@]}"; do
    case "${given[$i]}" in
      --sup_type) s=${given[$((i + 1))]:-$s} ;;
      --sup_type=*) s=${given[$i]#--sup_type=} ;;
    esac
  done
  echo "$s"
}

test_args() {  # method fold: sets targs, test_2D_fully's arguments for that run
  targs=("$here/code/test_2D_fully.py" --root_path "$root" --fold "$2" --exp "${exp_prefix}$1" --sup_type "$(sup_of "$1")"
    --out_json "model/results/${exp_prefix}$1_$2.json")
  [ "$tta" = off ] || targs+=(--tta)
}

run_one() {  # method fold [gpu]
  local m=$1 f=$2 exp="${exp_prefix}$1" resume=() gpu=() own=() targs=()
  [ -n "${3:-}" ] && gpu=(env "CUDA_VISIBLE_DEVICES=$3")
  read -ra own <<< "${method_args[$m]:-}"
  [ -f "model/${exp}_${f}/$(sup_of "$m")/last.pth" ] && resume=(--resume)
  "${gpu[@]}" $PY "$here/code/train.py" --method "$m" --exp "$exp" --root_path "$root" --fold "$f" \
    --max_iterations "$iters" --patch_size "$patch" "$patch" --input_size "${input:-$patch}" "${input:-$patch}" \
    --batch_size "$batch" --amp "$amp" \
    --val_interval "$val" "${resume[@]}" "${own[@]}" "${extra[@]}"
  test_args "$m" "$f"
  "${gpu[@]}" $PY "${targs[@]}"
}

mkdir -p model/results
jobs_=()
for m in $methods; do for f in $folds; do jobs_+=("$m $f"); done; done
for j in "${jobs_[@]}"; do  # a results file of another run is refused before hours of training, not after
  test_args $j
  $PY "${targs[@]}" --check_outputs || exit 2
done
gpus=()
if [ "$($PY -c "import torch; print(torch.cuda.device_count())")" -gt 1 ]; then
  # Index into the GPUs the caller made visible, not into 0..n-1.
  IFS=, read -ra gpus <<< "${CUDA_VISIBLE_DEVICES:-$($PY -c "import torch; print(','.join(map(str, range(torch.cuda.device_count()))))")}"
fi
failed=0
if [ ${#gpus[@]} -gt 1 ]; then
  pids=()
  for i in "${!jobs_[@]}"; do
    j=${jobs_[$i]}
    run_one $j "${gpus[$((i % ${#gpus[@]}))]}" > "model/results/${exp_prefix}${j// /_}.log" 2>&1 &
    pids+=($!)
    if [ ${#pids[@]} -eq ${#gpus[@]} ] || [ "$i" -eq $((${#jobs_[@]} - 1)) ]; then
      for p in "${pids[@]}"; do wait "$p" || failed=1; done
      pids=()
    fi
  done
  [ "$failed" -eq 0 ] || echo "train_wss.sh: some runs failed; see model/results/*.log" >&2
else
  for j in "${jobs_[@]}"; do run_one $j; done
fi

$PY "$here/code/summarize_results.py" --results model/results --methods $methods --folds $folds \
  --exp_prefix "$exp_prefix" && [ "$failed" -eq 0 ]
