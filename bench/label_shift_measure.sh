#!/usr/bin/env bash
# Label-shift testbeds (bench/label_shift_testbed.py from a no-duplicate copy made by bench/unique_subset.py at
# /tmp/wsd_unique): cv (3 folds, 4 epochs, 3 models), submit without and with the decision steps, held-out scores.
set -e

cd "$(dirname "$0")/.."; export PYTHONPATH=$PWD
R=run.py
for prof in train test; do for seed in 0 8; do
  D=/tmp/ls_${prof}${seed}
  python3 bench/label_shift_testbed.py --data /tmp/wsd_unique --profile $prof --seed $seed --out $D
  python3 $R cv --data $D --workdir ${D}_w --folds 3 --epochs 4 > ${D}_cv.log 2>&1
  python3 $R submit --data $D --workdir ${D}_w --out ${D}_s --label-shift off --offsets off --name plain > ${D}_plain.log 2>&1
  python3 $R submit --data $D --workdir ${D}_w --out ${D}_s --name decided > ${D}_dec.log 2>&1
  for n in plain decided; do echo "$prof$seed $n $(python3 $R score ${D}_s/$n.csv $D/holdout_labels.csv | grep macro-F1)"; done
  grep -E "label shift|offsets|re-weighted|wrote" ${D}_dec.log | cut -c1-220
done; done
