#!/usr/bin/env bash
# Label-shift testbeds (bench/label_shift_testbed.py from a no-duplicate copy made by bench/unique_subset.py at
# /tmp/wsd_unique): cv (3 folds, 4 epochs, 3 models), submit without the decision steps (plain) and with
# --label-shift auto (offsets auto), held-out scores and the estimate's largest error against the true held-out
# proportions. CV_SET="class_weight=balanced" trains class-weighted instead (into /tmp/ls_<copy>_cw_w).
set -e

cd "$(dirname "$0")/.."; export PYTHONPATH=$PWD
R=run.py
for prof in train test; do for seed in 0 8; do
  D=/tmp/ls_${prof}${seed}
  W=${D}_w; S=${D}_s; SET=()
  if [ -n "$CV_SET" ]; then W=${D}_cw_w; S=${D}_cw_s; SET=(--set "$CV_SET"); fi
  [ -d $D ] || python3 bench/label_shift_testbed.py --data /tmp/wsd_unique --profile $prof --seed $seed --out $D
  [ -d $W ] || python3 $R cv --data $D --workdir $W --folds 3 --epochs 4 "${SET[@]}" > ${W}.cv.log 2>&1
  python3 $R submit --data $D --workdir $W --out $S --label-shift off --offsets off --name plain --overwrite > $S.plain.log 2>&1
  python3 $R submit --data $D --workdir $W --out $S --label-shift auto --name auto --overwrite > $S.auto.log 2>&1
  for n in plain auto; do echo "$prof$seed $n $(python3 $R score $S/$n.csv $D/holdout_labels.csv | grep macro-F1)"; done
  grep -E "label shift|offsets|re-weighted" $S.auto.log | cut -c1-220
  python3 - $S/auto.json $D/holdout_labels.csv <<'PY'
import json, sys
import numpy as np, pandas as pd
shift = json.load(open(sys.argv[1]))["decisions"].get("label_shift")
y = pd.read_csv(sys.argv[2])["label"].to_numpy()
if shift:
    err = np.abs(np.array(shift["test_priors"]) - np.bincount(y, minlength=10) / len(y))
    print(f"estimate's largest error {err.max():.3f} (class {err.argmax()})")
PY
done; done
