#!/usr/bin/env bash
# `run.py auto` figures: held-out macro-F1 of auto.csv, its estimated_test_macro_f1 and its wall time against
# the limit, per preset and time limit, on the noisy new-speakers testbed and on the shipped data.
# Long (each run up to its limit, 15-20 minutes and more in all): run it on a quiet machine, e.g.
#     bash bench/auto_figures.sh /tmp/auto_figures
# Writes $OUT/auto_figures.csv (testbed, preset, limit, seconds, estimate, held-out macro-F1, source submission)
# and keeps every workdir, so `run.py runs --workdir ...` and `run.py report` can read the stages.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/auto_figures}
LIMITS=${LIMITS:-"10m 20m"}
mkdir -p "$OUT"
TB="$OUT/tb_speakers"
[ -f "$TB/holdout_labels.csv" ] || python3 bench/speaker_testbed.py make --out "$TB" --seed 0 --noisier-test
CSV="$OUT/auto_figures.csv"
echo "testbed,preset,limit,seconds,estimated_test_macro_f1,heldout_macro_f1,source" > "$CSV"
run_one() {  # testbed data labels preset limit
  local name=$1 data=$2 labels=$3 preset=$4 limit=$5
  local tag="$name-$preset-$limit" t0 t1 est src held
  t0=$(date +%s.%N)
  python3 run.py auto --data "$data" --preset "$preset" --time-limit "$limit" \
    --workdir "$OUT/w-$tag" --out "$OUT/subs-$tag" | tee "$OUT/$tag.log"
  t1=$(date +%s.%N)
  est=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['estimated_test_macro_f1'])" "$OUT/subs-$tag/auto.json")
  src=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['auto']['source_submission'])" "$OUT/subs-$tag/auto.json")
  held=""
  if [ -n "$labels" ]; then
    held=$(python3 -c "import competition,sys; print(f\"{competition.score(sys.argv[1], sys.argv[2]).macro_f1:.4f}\")" \
      "$OUT/subs-$tag/auto.csv" "$labels")
  fi
  echo "$name,$preset,$limit,$(python3 -c "print(round($t1-$t0,1))"),$est,$held,$src" >> "$CSV"
}
for limit in $LIMITS; do
  for preset in fast best; do
    run_one speakers "$TB" "$TB/holdout_labels.csv" "$preset" "$limit"
  done
done
# the shipped data (no held-out labels: the estimate and the time only)
run_one shipped data/wsd "" fast 20m
run_one shipped data/wsd "" best 20m
# resume: a second invocation of a finished plan skips every finished stage (seconds, not minutes)
run_one speakers "$TB" "$TB/holdout_labels.csv" best "${LIMITS##* }"
cat "$CSV"
