"""Speaker testbed (issue 15): new-speaker copies of the shipped data, and how honest out-of-fold scores are there.

``make``: a copy whose test rows are whole speaker-like clusters of the audio (``bench/degrade.py
--holdout-speakers``), labelled in ``holdout_labels.csv``, training and test rows degraded alike (babble noise
at inf/10/5/0 dB, a quarter of the images occluded, pixel noise up to 60): the only train -> test shift is
the speakers; with ``--noisier-test`` the test rows are noisier too (5/0/-5 dB, half the images occluded, pixel
noise up to 90). Prints the clusters' digit counts (speakers say every digit: balanced columns).

``measure``: for cv runs of such a copy, each model's out-of-fold macro-F1 beside its held-out macro-F1 (its
fold-averaged test logits against the held-out labels), and the same for the blend ``run.py submit`` writes
(its nested out-of-fold score) of each run alone and of all of them together, as markdown tables; for a
pseudo-label round (``cv --pseudo``) also its per-fold sets and their labels' precision on the truth.

    python3 bench/speaker_testbed.py make --out /tmp/tb0 --seed 0
    python3 run.py cv --data /tmp/tb0 --workdir /tmp/w0 --set split=grouped
    python3 bench/speaker_testbed.py measure --data /tmp/tb0 --workdir /tmp/w0 --run default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import degrade  # noqa: E402
from competition.data.load import load_competition  # noqa: E402
from competition.ensemble.blend import fold_average  # noqa: E402
from competition.metrics import macro_f1  # noqa: E402
from competition.store.loading import load_runs  # noqa: E402
from competition.submission.score import score_submission  # noqa: E402

SAME_NOISE = ["--snr", "inf,10,5,0", "--test-snr", "inf,10,5,0", "--test-occlude", "0.25", "--test-pixel-noise", "60"]
# --noisier-test: the test rows also noisier than the training rows (new speakers AND a new noise level)
NOISIER_TEST = ["--snr", "inf,10,5,0", "--test-snr", "5,0,-5", "--test-occlude", "0.5", "--test-pixel-noise", "90"]


def make(out: str, seed: int, held: int, noisier_test: bool = False, data: str | None = None) -> None:
    noise = NOISIER_TEST if noisier_test else SAME_NOISE
    source = [] if data is None else ["--data", data]
    degrade.main(["--out", out, "--seed", str(seed), "--holdout-speakers", str(held), *noise, *source])
    rows = pd.read_csv(Path(out) / "degrade_rows.csv")
    labels = pd.concat([pd.read_csv(Path(out) / "y_train.csv"), pd.read_csv(Path(out) / "holdout_labels.csv")])
    rows = rows.merge(labels, on="row_id")
    print("rows per speaker-like cluster and digit (test rows: the held-out clusters):")
    print(pd.crosstab([rows["part"], rows["speaker"]], rows["label"]).to_string())


def measure(data: Path, workdir: Path, runs: list[str], consensus: tuple[str, ...] = ("auto", "off")) -> str:
    comp = load_competition(data)
    truth = pd.read_csv(data / "holdout_labels.csv")
    if not (truth["row_id"].to_numpy() == comp.sample_submission["row_id"].to_numpy()).all():
        raise SystemExit(f"{data}: holdout_labels.csv is not in the sample submission's order")
    y_test = truth["label"].to_numpy()
    loaded = load_runs(workdir, runs, comp, None)
    lines = ["| model | OOF macro-F1 | held-out macro-F1 | OOF - held-out |", "|---|---|---|---|"]
    for r in loaded:
        for m in r.oof:
            oof = macro_f1(comp.y, r.oof[m].argmax(1))
            held = macro_f1(y_test, fold_average(r.test[m], "logits").argmax(1))
            lines.append(f"| {r.name}/{m} | {oof:.4f} | {held:.4f} | {oof - held:+.4f} |")
    for r in loaded:
        if (r.dir / "pseudo.npz").is_file():
            lines += ["", pseudo_table(r.dir, y_test)]
    lines += [
        "",
        "| blended runs | written blend | OOF (nested) | held-out macro-F1 | OOF - held-out |",
        "|---|---|---|---|---|",
    ]
    for blended in [[r] for r in runs] + ([runs] if len(runs) > 1 else []):
        lines += [written_blend(data, workdir, blended, c) for c in consensus]
    return "\n".join(lines)


def pseudo_table(run_dir: Path, y_test: np.ndarray) -> str:
    """A pseudo-label round's per-fold sets (cv --pseudo): threshold, rows and their labels' precision on the truth."""
    head = "| fold | threshold | rows | share of test rows | precision on the truth |"
    lines = [f"{run_dir.name}: pseudo-labels (precision against holdout_labels.csv)", "", head, "|---|---|---|---|---|"]
    with np.load(run_dir / "pseudo.npz") as z:
        for k, t in enumerate(z["thresholds"]):
            idx, labels = z[f"idx{k}"], z[f"labels{k}"]
            prec = (labels == y_test[idx]).mean() if len(idx) else float("nan")
            lines.append(f"| {k} | {t:.3f} | {len(idx)} | {len(idx) / len(y_test):.3f} | {prec:.4f} |")
    return "\n".join(lines)


def written_blend(data: Path, workdir: Path, runs: list[str], consensus: str = "auto") -> str:
    """Run ``run.py submit --consensus CONSENSUS`` on ``runs`` and score its file against the held-out labels."""
    out = workdir / "testbed_submissions"
    name = "+".join(runs) + ("" if consensus == "auto" else f"-consensus-{consensus}")
    cmd = [sys.executable, str(ROOT / "run.py"), "submit", "--data", str(data), "--workdir", str(workdir)]
    cmd += [x for r in runs for x in ("--run", r)] + ["--out", str(out), "--name", name, "--consensus", consensus]
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    manifest = json.loads((out / f"{name}.json").read_text())
    held = score_submission(out / f"{name}.csv", data / "holdout_labels.csv")["macro_f1"]
    applied = manifest.get("consensus", {}).get("applied")
    oof = manifest["consensus"]["oof_macro_f1_after"] if applied else manifest["oof_nested_macro_f1"]
    oof = oof or manifest["oof_macro_f1"]  # an equal blend has no nested score
    left = f", left out: {', '.join(manifest['left_out'])}" if manifest["left_out"] else ""
    weights = ", ".join(f"{m} {w:.2f}" for m, w in manifest["weights"].items() if w > 0)
    blend = f"{manifest['blend']} {manifest['average']}{' + consensus' if applied else ''}: {weights}{left}"
    warned = " (submit warned: test rows unlike training rows)" if "warning" in log else ""
    runs_cell = " + ".join(runs) + ("" if consensus == "auto" else f" (--consensus {consensus})")
    return f"| {runs_cell} | {blend}{warned} | {oof:.4f} | {held:.4f} | {oof - held:+.4f} |"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make", help="write a new-speaker copy of the shipped data")
    mk.add_argument("--out", required=True)
    mk.add_argument("--seed", type=int, default=0, help="chooses the held-out clusters and the noise")
    mk.add_argument("--held", type=int, default=2, help="speaker-like clusters (of 6) held out as test rows")
    mk.add_argument("--noisier-test", action="store_true", help="test audio at 5/0/-5 dB, half the images occluded")
    mk.add_argument("--data", default=None, help="source folder (default: the shipped data; e.g. a unique copy)")
    ms = sub.add_parser("measure", help="OOF against held-out macro-F1 of cv runs on a copy")
    ms.add_argument("--data", required=True)
    ms.add_argument("--workdir", required=True)
    ms.add_argument("--run", action="append", required=True)
    ms.add_argument(
        "--consensus", default="auto,off", help="submit's --consensus settings to score each blend with (default both)"
    )
    args = p.parse_args(argv)
    if args.command == "make":
        make(args.out, args.seed, args.held, args.noisier_test, args.data)
    else:
        np.set_printoptions(precision=4)
        print(measure(Path(args.data), Path(args.workdir), args.run, tuple(args.consensus.split(","))))


if __name__ == "__main__":
    main()
