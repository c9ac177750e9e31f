#!/usr/bin/env bash
# Issue 15's figures in one go, sized for a GPU machine (16 cores, one GPU; ~6 min on an H100): the default
# cv of the shipped data (timed alone) and with early stopping; then three new-speaker testbeds side by side,
# each with the default run, an early-stopping run and a pseudo-label round on the default run's submission,
# scored against the held-out truth (bench/speaker_testbed.py measure).
#   tb0:  seed 0, test rows new speakers only (the earlier testbed)
#   tb8n: seed 8, new speakers and a noisier test (5/0/-5 dB, half the images occluded)
#   u0n:  the shipped data without duplicate rows (bench/unique_subset.py), seed 0, noisier test
# Usage: OUT=/some/folder bash bench/shift_gpu.sh   (logs and markdown tables land in $OUT)
set -u
OUT=${OUT:-/tmp/shift_gpu}
W=${W:-/tmp/shift_work}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1
py=python3

{
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
  $py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  $py -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py 2>&1 | tail -3
  start=$(date +%s.%N)
  $py run.py cv --workdir "$W/wsd" --run default
  echo "default cv of the shipped data: $(awk "BEGIN{print $(date +%s.%N) - $start}") s wall"
} > "$OUT/wsd.log" 2>&1

es_shipped() {
  local start
  start=$(date +%s.%N)
  $py run.py cv --workdir "$W/wsd" --run es --set early_stop=true
  echo "early-stopping cv of the shipped data: $(awk "BEGIN{print $(date +%s.%N) - $start}") s wall"
  $py -c "
import pandas as pd
for run in ('default', 'es'):
    s = pd.read_csv('$W/wsd/' + run + '/scores.csv')
    print(run, s.groupby('model')[['epochs', 'seconds']].agg(['mean', 'min', 'max']).round(1).to_string())
"
}

testbed() {  # name, make's arguments
  local name=$1 d=$W/$1 w=$W/w_$1 consensus=off
  shift
  $py bench/speaker_testbed.py make --out "$d" "$@"
  $py run.py cv --data "$d" --workdir "$w" --run default
  $py run.py cv --data "$d" --workdir "$w" --run es --set early_stop=true
  $py run.py submit --data "$d" --workdir "$w" --run default --out "$w/sub" --name base
  $py run.py cv --data "$d" --workdir "$w" --run pseudo --pseudo "$w/sub/base.csv"
  [ "$name" = u0n ] && consensus=auto  # no duplicates there: consensus is a no-op
  $py bench/speaker_testbed.py measure --data "$d" --workdir "$w" --run default --run es --run pseudo \
    --consensus $consensus > "$OUT/$name.md"
}

$py bench/unique_subset.py --out "$W/unique" > /dev/null
es_shipped >> "$OUT/wsd.log" 2>&1 &
testbed tb0 --seed 0 > "$OUT/tb0.log" 2>&1 &
testbed tb8n --seed 8 --noisier-test > "$OUT/tb8n.log" 2>&1 &
testbed u0n --data "$W/unique" --seed 0 --noisier-test > "$OUT/u0n.log" 2>&1 &
wait
echo done >> "$OUT/wsd.log"
