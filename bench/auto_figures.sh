#!/usr/bin/env bash
# `run.py auto` figures: held-out macro-F1 of auto.csv beside default `cv` + `submit`, its
# estimated_test_macro_f1 and its wall time against the limit, on
#   - seeds 0, 8 and 4 of the noisy new-speaker testbed (made from the no-duplicate copy, --noisier-test), 20m
#     (seed 4: the confirmation copy, checked after a change was chosen on the other two);
#   - a small copy: 1,000 training rows of the seed-0 testbed (its test rows and labels), 5m; on request (TESTBEDS)
#     small8, the same of the seed-8 testbed;
#   - the shipped data (no held-out labels: nested out-of-fold macro-F1 and the estimate), 15m;
#   - on request (TESTBEDS), label-shift copies of seeds 0 and 8 (`bench/imbalance_copy.py --seed 0` and `1`:
#     imbalanced training rows, test rows imbalanced another way), tb0ls and tb8ls, 15m.
# Long (about 2 hours on 2 cores): run it on a quiet machine, e.g.
#     bash bench/auto_figures.sh /tmp/auto_figures
# Writes $OUT/auto_figures.csv (testbed, what, limit, seconds, estimate, nested OOF, held-out macro-F1, load) and
# keeps every workdir, so `run.py runs --workdir ...` and `run.py report` can read the stages.
# TESTBEDS="small tb0" (any of small small8 tb0 tb8 tb4 shipped tb0ls tb8ls) and WHAT="default" (default, auto or both) run a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/auto_figures}
TESTBEDS=${TESTBEDS:-"small tb0 tb8 tb4 shipped"}
WHAT=${WHAT:-"default auto"}
mkdir -p "$OUT"
UNIQUE="$OUT/wsd_unique"
[ -f "$UNIQUE/y_train.csv" ] || python3 bench/unique_subset.py --out "$UNIQUE"
for seed in 0 8 4; do
  [ -f "$OUT/tb$seed/holdout_labels.csv" ] ||
    python3 bench/speaker_testbed.py make --data "$UNIQUE" --out "$OUT/tb$seed" --seed $seed --noisier-test
done
for pair in small:tb0 small8:tb8; do  # 1,000 training rows of tb0 (tb8), stratified; its test rows unchanged
  name=${pair%%:*}
  [ -f "$OUT/$name/holdout_labels.csv" ] && continue
  case " $TESTBEDS " in *" $name "*) ;; *) [ "$name" = small ] || continue ;; esac  # small8: only when asked for
  python3 - "$OUT/${pair##*:}" "$OUT/$name" <<'EOF'
import shutil, sys
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.model_selection import train_test_split
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
dst.mkdir(parents=True, exist_ok=True)
y = pd.read_csv(src / "y_train.csv")
keep, _ = train_test_split(np.arange(len(y)), train_size=1000, stratify=y["label"], random_state=0)
keep = np.sort(keep)
for name in ("x_train_wr.npy", "x_train_sp.npy"):
    np.save(dst / name, np.load(src / name)[keep])
y.iloc[keep].reset_index(drop=True).assign(row_id=np.arange(len(keep))).to_csv(dst / "y_train.csv", index=False)
for name in ("x_test_wr.npy", "x_test_sp.npy", "sample_submission.csv", "holdout_labels.csv"):
    shutil.copy(src / name, dst / name)
EOF
done
for pair in tb0ls:0 tb8ls:1; do  # made only when asked for: not in the default TESTBEDS
  name=${pair%%:*}
  case " $TESTBEDS " in *" $name "*)
    [ -f "$OUT/$name/holdout_labels.csv" ] ||
      python3 bench/imbalance_copy.py --data "$OUT/${name%ls}" --out "$OUT/$name" --seed "${pair##*:}" ;;
  esac
done
CSV="$OUT/auto_figures.csv"
[ -f "$CSV" ] || echo "testbed,what,limit,seconds,estimated_test_macro_f1,nested_oof_macro_f1,heldout_macro_f1,load" > "$CSV"
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
oof_of() {  # a submission manifest's honest out-of-fold macro-F1 (what auto reports as its estimate)
  python3 -c "import json,sys; from competition.pipeline.run import honest_oof; print(round(honest_oof(json.load(open(sys.argv[1]))), 4))" "$1"
}
held_of() {  # csv labels
  [ -n "$2" ] && python3 -c "import competition,sys; print(f\"{competition.score(sys.argv[1], sys.argv[2]).macro_f1:.4f}\")" "$1" "$2" || true
}
run_auto() {  # testbed data labels limit
  local name=$1 data=$2 labels=$3 limit=$4 tag="$1-best-$4" t0 t1 load
  load=$(cut -d' ' -f1 /proc/loadavg); t0=$(date +%s.%N)
  python3 run.py auto --data "$data" --preset best --time-limit "$limit" \
    --workdir "$OUT/w-$tag" --out "$OUT/subs-$tag" | tee "$OUT/$tag.log"
  t1=$(date +%s.%N)
  local j="$OUT/subs-$tag/auto.json"
  echo "$name,auto best,$limit,$(python3 -c "print(round($t1-$t0,1))"),$(field "$j" "d['estimated_test_macro_f1']"),$(oof_of "$j"),$(held_of "$OUT/subs-$tag/auto.csv" "$labels"),$load" >> "$CSV"
}
run_default() {  # testbed data labels: default cv + submit
  local name=$1 data=$2 labels=$3 t0 t1 load
  load=$(cut -d' ' -f1 /proc/loadavg); t0=$(date +%s.%N)
  python3 run.py cv --data "$data" --workdir "$OUT/w-$name-default" | tee "$OUT/$name-default.log"
  python3 run.py submit --data "$data" --workdir "$OUT/w-$name-default" --out "$OUT/subs-$name-default" --name submission \
    | tee -a "$OUT/$name-default.log"
  t1=$(date +%s.%N)
  local j="$OUT/subs-$name-default/submission.json"
  echo "$name,default cv + submit,,$(python3 -c "print(round($t1-$t0,1))"),,$(oof_of "$j"),$(held_of "$OUT/subs-$name-default/submission.csv" "$labels"),$load" >> "$CSV"
}
limit_of() { case $1 in small*) echo 5m ;; shipped | *ls) echo 15m ;; *) echo 20m ;; esac; }
for tb in $TESTBEDS; do
  if [ "$tb" = shipped ]; then data=data/wsd labels=""; else data="$OUT/$tb" labels="$OUT/$tb/holdout_labels.csv"; fi
  for what in $WHAT; do
    case $what in
      default) [ -f "$OUT/subs-$tb-default/submission.csv" ] || run_default "$tb" "$data" "$labels" ;;
      auto) run_auto "$tb" "$data" "$labels" "$(limit_of "$tb")" ;;
    esac
  done
done
cat "$CSV"
