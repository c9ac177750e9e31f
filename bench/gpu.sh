#!/usr/bin/env bash
# Batched units on one GPU (about 5 min on an H100/H200, under 8): the default cv of the shipped data trained unit
# by unit (batch_units=off) and batched (batch_units=on), side by side in one go on the same machine and the same
# cached split, each timed; then the batched run's out-of-fold macro-F1 checked against the sequential run's
# (tolerance per model: max(TOL, 3 x the sequential run's fold-to-fold std of macro-F1), TOL=0.005 by default);
# then `tune` trials timed (TRIALS trials of fusion on TRIAL_FOLDS folds each; tune trains unit by unit).
# Every figure is printed; the exit status is 1 when a score is out of tolerance or a cv run did not finish. Each
# cv run is stopped after CV_LIMIT seconds (190) and tune after TUNE_LIMIT (60; no new trial after half of it), so the
# whole script stays under 8 minutes whatever the speed.
#
#   bash bench/gpu.sh                                    # on the GPU machine
#   DEVICE=cpu FOLDS=2 EPOCHS=1 ROWS=300 TRIALS=1 bash bench/gpu.sh   # a quick dry run of the script on CPU
#
# Environment: DEVICE (cuda), DATA (data/wsd), FOLDS (5), EPOCHS (6), ROWS (0: all training rows; else the first
# ROWS rows), TRIALS (3), TRIAL_FOLDS (2), TOL (0.005), CV_LIMIT (190), TUNE_LIMIT
# (60), W (a scratch folder, removed at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-data/wsd}
FOLDS=${FOLDS:-5}
EPOCHS=${EPOCHS:-6}
ROWS=${ROWS:-0}
TRIALS=${TRIALS:-3}
TRIAL_FOLDS=${TRIAL_FOLDS:-2}
TOL=${TOL:-0.005}
CV_LIMIT=${CV_LIMIT:-190}
TUNE_LIMIT=${TUNE_LIMIT:-60}
W=${W:-$(mktemp -d)}
trap 'rm -rf "$W"' EXIT
export PYTHONUNBUFFERED=1
py=python3

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
echo "settings: device $DEVICE, data $DATA, $FOLDS folds x $EPOCHS epochs, rows $([ "$ROWS" = 0 ] && echo all || echo "$ROWS"), tune $TRIALS trials"

if [ "$ROWS" != 0 ]; then  # a cut of the data for a dry run
  $py -c "from competition.data.load import write_subset; from pathlib import Path; write_subset(Path('$W/data'), $ROWS, min($ROWS, 5000), Path('$DATA'))"
  DATA=$W/data
fi
common=(--data "$DATA" --workdir "$W/wd" --device "$DEVICE" --folds "$FOLDS" --epochs "$EPOCHS")

# The split and its adversarial validation are computed once and cached in the workdir: neither timed run pays them.
$py -c "
from pathlib import Path
from competition.config import load_config
from competition.data.load import load_competition
from competition.splits import adversarial
from competition.splits.folds import load_or_make_folds
comp, wd, cfg = load_competition('$DATA'), Path('$W/wd'), load_config('default', {'folds': $FOLDS})
adversarial.load_or_run(comp, wd)
load_or_make_folds(comp, wd, cfg.folds, cfg.seed, cfg.group_duplicates, cfg.split)
print('split cached')
"

declare -A wall
status=0
for mode in off on; do
  start=$(date +%s.%N)
  rc=0
  timeout "$CV_LIMIT" $py run.py cv "${common[@]}" --set batch_units=$mode --run "batch-$mode" || rc=$?
  wall[$mode]=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}")
  if [ "$rc" != 0 ]; then
    echo "cv batch_units=$mode: did not finish (exit $rc; 124 = stopped after CV_LIMIT=$CV_LIMIT s)"
    status=1
  fi
  echo "cv batch_units=$mode: ${wall[$mode]} s wall"
done
echo
echo "| cv ($FOLDS folds x $EPOCHS epochs, $DEVICE) | wall s |"
echo "| --- | --- |"
echo "| sequential (batch_units=off) | ${wall[off]} |"
echo "| batched (batch_units=on) | ${wall[on]} |"
awk "BEGIN{printf \"batched speed-up of the whole cv: %.2fx\n\", ${wall[off]} / ${wall[on]}}"

$py - "$W/wd" "$TOL" <<'EOF' || status=1
import json
import sys

import pandas as pd

wd, tol = sys.argv[1], float(sys.argv[2])
try:
    seq = json.load(open(f"{wd}/batch-off/summary.json"))
    bat = json.load(open(f"{wd}/batch-on/summary.json"))
except FileNotFoundError as e:
    sys.exit(f"OOF check: no scores to compare ({e.filename} missing: a cv run did not finish)")
folds = {run: pd.read_csv(f"{wd}/batch-{run}/scores.csv") for run in ("off", "on")}
print("\n| model | sequential OOF F1 | batched OOF F1 | difference | fold std | tolerance | seq s/unit | batched s/unit |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
ok = True
for m, row in seq["oof"].items():
    s, b = row["macro_f1"], bat["oof"][m]["macro_f1"]
    std = folds["off"][folds["off"]["model"] == m]["macro_f1"].std()
    limit = max(tol, 3 * std)
    secs = [folds[r][folds[r]["model"] == m]["seconds"].mean() for r in ("off", "on")]
    good = abs(b - s) <= limit
    ok &= good
    print(f"| {m} | {s:.4f} | {b:.4f} | {b - s:+.4f} | {std:.4f} | {limit:.4f} {'ok' if good else 'OUT'} | "
          f"{secs[0]:.1f} | {secs[1]:.1f} |")
print("OOF check:", "every model within tolerance" if ok else "a model OUT of tolerance")
sys.exit(0 if ok else 1)
EOF

start=$(date +%s.%N)
rc=0
timeout "$TUNE_LIMIT" $py run.py tune --data "$DATA" --workdir "$W/wd" --device "$DEVICE" --folds "$FOLDS" \
  --epochs "$EPOCHS" --trials "$TRIALS" --trial-folds "$TRIAL_FOLDS" --timeout $((TUNE_LIMIT / 2)) \
  --study gpu-bench --out "$W/tuned.toml" || rc=$?
tune=$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $start}")
[ "$rc" != 0 ] && echo "tune: exit $rc (124 = stopped after TUNE_LIMIT=$TUNE_LIMIT s)"
$py - "$W/wd/tune/gpu-bench/study.journal" "$tune" "$TRIAL_FOLDS" <<'EOF' || true
import sys

import optuna

storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(sys.argv[1]))
study = optuna.load_study(study_name=None, storage=storage)
done = [t for t in study.trials if t.state.is_finished()]
secs = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
print(f"tune: {len(done)} trials finished ({sum(t.state.name == 'PRUNED' for t in done)} pruned) of fusion on up to "
      f"{sys.argv[3]} folds in {sys.argv[2]} s wall; per trial: " + ", ".join(f"{s:.1f} s" for s in secs))
EOF
exit $status
