"""Levers screen: each variance-reduction lever (seed bagging, weight averaging, audio augmentation, test-time
augmentation) against the baseline on speaker testbeds (``bench/speaker_testbed.py make``): held-out macro-F1 of
the fusion model's fold-averaged test logits and the wall-clock time of its ``cv``, relative to the baseline.

    python3 bench/unique_subset.py --out /tmp/lv_u
    python3 bench/speaker_testbed.py make --data /tmp/lv_u --out /tmp/lv_tb0 --noisier-test --seed 0
    python3 bench/speaker_testbed.py make --data /tmp/lv_u --out /tmp/lv_tb8 --noisier-test --seed 8
    python3 bench/levers.py --testbed /tmp/lv_tb0 --testbed /tmp/lv_tb8 --workdir /tmp/lv_w --lever base \\
        --lever ema=ema=0.99 --out bench/results/levers.md

Each lever is ``name=key=value[,key=value...]`` (``base``: no change); every run is
``run.py cv --models fusion --folds 3 --epochs 4 --workers 2 --set <keys>``, one at a time. Runs already in the
workdir are scored again, not retrained. The time factor compares the units' training seconds (test
predictions included), which leave out each command's set-up; ``<run>/bench_seconds`` keeps the wall-clock time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from competition.data.load import load_competition  # noqa: E402
from competition.ensemble.blend import fold_average  # noqa: E402
from competition.metrics import macro_f1  # noqa: E402
from competition.store.loading import load_finished_run  # noqa: E402

CV = ["--models", "fusion", "--folds", "3", "--epochs", "4", "--workers", "2"]


def parse_lever(spec: str) -> tuple[str, list[str]]:
    name, _, keys = spec.partition("=")
    return name, [k for k in keys.split(",") if k]


def command(data: Path, workdir: Path, name: str, keys: list[str]) -> list[str]:
    sets = [a for k in keys for a in ("--set", k)]
    return [sys.executable, "run.py", "cv", "--data", str(data), "--workdir", str(workdir), "--run", name, *CV, *sets]


def run_one(data: Path, workdir: Path, name: str, keys: list[str]) -> tuple[float, float, float]:
    """(OOF macro-F1, held-out macro-F1, training seconds) of one lever on one testbed: the seconds its units took
    (test predictions included, the run's set-up not: the first run of a workdir also validates adversarially)."""
    run_dir = workdir / name
    timing = run_dir / "bench_seconds"
    if not timing.is_file():
        t0 = time.perf_counter()
        subprocess.run(command(data, workdir, name, keys), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    comp = load_competition(data)
    y_test = pd.read_csv(data / "holdout_labels.csv")["label"].to_numpy()
    run = load_finished_run(run_dir, comp)
    oof = macro_f1(comp.y, run.oof["fusion"].argmax(1))
    held = macro_f1(y_test, fold_average(run.test["fusion"], "logits").argmax(1))
    return oof, held, sum(r.seconds for r in run.folds["fusion"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--testbed", action="append", required=True, type=Path)
    p.add_argument("--workdir", required=True, type=Path)
    p.add_argument("--lever", action="append", required=True, help="name=key=value[,key=value] or base")
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    args = p.parse_args(argv)
    levers = [parse_lever(s) for s in args.lever]
    rows = []
    for tb in args.testbed:
        wd = args.workdir / tb.name
        base = None
        for name, keys in levers:
            oof, held, secs = run_one(tb, wd, name, keys)
            base = base or (held, secs)
            rows.append((tb.name, name, " ".join(keys) or "-", oof, held, held - base[0], secs / base[1]))
            print(
                f"{tb.name} {name}: OOF {oof:.4f} held-out {held:.4f} ({held - base[0]:+.4f}) {secs:.0f}s", flush=True
            )
    lines = [
        "| testbed | lever | keys | OOF macro-F1 | held-out macro-F1 | vs base | time factor |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {t} | {n} | `{k}` | {o:.4f} | {h:.4f} | {d:+.4f} | {f:.2f} |" for t, n, k, o, h, d, f in rows]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
