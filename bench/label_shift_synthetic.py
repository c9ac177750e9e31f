"""Label shift on a synthetic problem: imbalanced training rows (40..800 per class), balanced test rows, a
weak-ish classifier (a logistic regression on heteroscedastic Gaussians, 5-fold out-of-fold predictions and
fold-averaged test log-probabilities). Compares the test macro-F1 of plain argmax, BCTS + prior correction,
and correction + macro-F1 offsets; the EM prior estimate's error; and the re-weighted out-of-fold macro-F1
against the actual test macro-F1. A control repeats it with test rows that have the training proportions.

    python3 bench/label_shift_synthetic.py --seeds 5 --out bench/results/label_shift_synthetic.md
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.special import log_softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from competition.ensemble.offsets import apply_offsets, decide_offsets, nested_offsets  # noqa: E402
from competition.ensemble.priors import (  # noqa: E402
    apply_bcts,
    class_priors,
    correct_priors,
    detect_label_shift,
    fit_bcts,
    reweighted_macro_f1,
)
from competition.metrics import macro_f1  # noqa: E402

C, DIM, FOLDS = 10, 10, 5
TRAIN_COUNTS = np.linspace(40, 800, C).astype(int)


def problem(seed: int, sep: float):
    """Class means and per-class scales: unequal variances make the linear model misspecified."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(C, DIM)) * sep, rng.uniform(0.7, 1.4, size=C)


def draw(means, scales, counts, rng):
    y = np.repeat(np.arange(C), counts)
    x = means[y] + rng.normal(size=(len(y), DIM)) * scales[y, None]
    order = rng.permutation(len(y))
    return x[order], y[order]


def oof_and_test(x, y, x_test, seed):
    """5-fold out-of-fold log-probabilities, fold ids, and the fold models' mean test log-probabilities."""
    fold_of = np.empty(len(y), dtype=int)
    oof = np.empty((len(y), C))
    test = np.zeros((len(x_test), C))
    for k, (tr, va) in enumerate(StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=0.05, max_iter=300).fit(x[tr], y[tr])
        fold_of[va] = k
        oof[va] = model.predict_log_proba(x[va])
        test += model.predict_log_proba(x_test) / FOLDS
    return oof, fold_of, log_softmax(test, axis=1)


def nested_apply(decision, logp: np.ndarray, per_fold: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """Each fold's rows labelled with the offsets fitted without them (plain argmax when not applied)."""
    if not decision.applied:
        return logp.argmax(1)
    pred = np.empty(len(logp), dtype=int)
    for k, offsets in zip(np.unique(fold_of), per_fold, strict=True):
        pred[fold_of == k] = apply_offsets(logp[fold_of == k], offsets)
    return pred


def one_run(seed: int, sep: float, test_counts: np.ndarray) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    means, scales = problem(seed, sep)
    x, y = draw(means, scales, TRAIN_COUNTS, rng)
    x_test, y_test = draw(means, scales, test_counts, rng)
    oof, fold_of, test = oof_and_test(x, y, x_test, seed)
    true_test = test_counts / test_counts.sum()

    temperature, bias = fit_bcts(oof, y)
    cal_oof, cal_test = apply_bcts(oof, temperature, bias), apply_bcts(test, temperature, bias)
    train_priors = class_priors(y, C)
    shift = detect_label_shift(cal_test, train_priors, seed=seed)
    corrected = shift.correct(cal_test)
    oracle = correct_priors(cal_test, train_priors, true_test)
    offsets = decide_offsets(np.log(cal_oof), y, fold_of)
    # offsets fitted in the test priors' space: on corrected out-of-fold rows, weighted to the test priors
    corrected_oof = np.log(shift.correct(cal_oof))
    weight = shift.test_priors[y] / train_priors[y] if shift.shifted else None
    offsets_w = decide_offsets(corrected_oof, y, fold_of, weight)
    # the same decision rules on the out-of-fold rows, for the re-weighted estimates: offsets nested (each
    # fold's rows get offsets fitted without them), so those estimates are as honest as the test rows
    oof_corrected = corrected_oof.argmax(1)
    oof_both = nested_apply(offsets, corrected_oof, nested_offsets(np.log(cal_oof), y, fold_of)[1], fold_of)
    oof_both_w = nested_apply(offsets_w, corrected_oof, nested_offsets(corrected_oof, y, fold_of, weight)[1], fold_of)
    return {
        "T": temperature,
        "shifted": float(shift.shifted),
        "em_max_err": float(np.abs(shift.test_priors - true_test).max()),
        "em_max_err_uncal": float(np.abs(_em(np.exp(test), train_priors) - true_test).max()),
        "offsets_applied": float(offsets.applied),
        "nested_gain": offsets.nested_after - offsets.nested_before,
        "offsets_w_applied": float(offsets_w.applied),
        "oof_plain": macro_f1(y, oof.argmax(1)),
        "rw_plain": reweighted_macro_f1(y, oof.argmax(1), train_priors, shift.test_priors),
        "rw_corrected": reweighted_macro_f1(y, oof_corrected, train_priors, shift.test_priors),
        "rw_both": reweighted_macro_f1(y, oof_both, train_priors, shift.test_priors),
        "rw_both_w": reweighted_macro_f1(y, oof_both_w, train_priors, shift.test_priors),
        "test_plain": macro_f1(y_test, test.argmax(1)),
        "test_bcts": macro_f1(y_test, cal_test.argmax(1)),
        "test_corrected": macro_f1(y_test, corrected.argmax(1)),
        "test_oracle": macro_f1(y_test, oracle.argmax(1)),
        "test_offsets_only": macro_f1(y_test, offsets.predict(np.log(cal_test))),
        "test_both": macro_f1(y_test, offsets.predict(np.log(corrected))),
        "test_both_w": macro_f1(y_test, offsets_w.predict(np.log(corrected))),
    }


def _em(probs, train_priors):
    from competition.ensemble.priors import em_priors

    return em_priors(probs, train_priors)


LABELS = {
    "T": "BCTS temperature (fitted on OOF)",
    "shifted": "detect_label_shift: shifted (1 = yes)",
    "em_max_err": "EM prior estimate, max abs error (BCTS-calibrated)",
    "em_max_err_uncal": "EM prior estimate, max abs error (uncalibrated)",
    "offsets_applied": "offsets applied (train-priors space)",
    "nested_gain": "offsets nested OOF gain (train-priors space)",
    "offsets_w_applied": "offsets applied (test-priors space: corrected OOF, weighted)",
    "oof_plain": "OOF macro-F1, argmax",
    "rw_plain": "re-weighted OOF macro-F1, argmax",
    "test_plain": "**test macro-F1, argmax**",
    "test_bcts": "test macro-F1, BCTS only",
    "rw_corrected": "re-weighted OOF macro-F1, BCTS + prior correction",
    "test_corrected": "**test macro-F1, BCTS + prior correction**",
    "test_oracle": "test macro-F1, BCTS + correction to the true priors",
    "test_offsets_only": "test macro-F1, BCTS + offsets (no correction)",
    "rw_both": "re-weighted OOF macro-F1, corrected + nested offsets (train space)",
    "test_both": "**test macro-F1, corrected + offsets (train space)**",
    "rw_both_w": "re-weighted OOF macro-F1, corrected + nested offsets (test space)",
    "test_both_w": "**test macro-F1, corrected + offsets (test space)**",
}


def table(rows: list[dict[str, float]], title: str) -> str:
    """One line per quantity, one column per seed, then the mean."""
    head = " | ".join(f"seed {s}" for s in range(len(rows)))
    lines = [f"### {title}", "", f"| quantity | {head} | mean |", "|---" * (len(rows) + 2) + "|"]
    for key, label in LABELS.items():
        values = [r[key] for r in rows]
        lines.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {np.mean(values):.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--sep", type=float, default=0.9, help="scale of the class means (smaller: weaker model)")
    p.add_argument("--test-per-class", type=int, default=500)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    balanced = np.full(C, args.test_per_class)
    same = np.round(TRAIN_COUNTS * balanced.sum() / TRAIN_COUNTS.sum()).astype(int)
    shifted = [one_run(s, args.sep, balanced) for s in range(args.seeds)]
    control = [one_run(s, args.sep, same) for s in range(args.seeds)]
    text = "\n\n".join(
        [
            table(shifted, f"balanced test ({args.test_per_class} per class), train {TRAIN_COUNTS.tolist()}"),
            table(control, f"control: test with the training proportions ({same.tolist()})"),
        ]
    )
    print(text)
    if args.out:
        cmd = "python3 bench/label_shift_synthetic.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(f"# Label shift, synthetic\n\n`{cmd}`\n\n{text}\n")


if __name__ == "__main__":
    main()
