"""Score: a submission against labels the user holds out: macro-F1, accuracy, per-class precision, recall, F1 and
support, and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from competition.data.load import N_CLASSES
from competition.metrics import accuracy, macro_f1
from competition.utils.validation import check_same_ids, read_labelled


@dataclass(frozen=True)
class Score:
    macro_f1: float
    accuracy: float
    per_class: pd.DataFrame  # index class 0-9: precision, recall, f1, support
    confusion: np.ndarray  # (10, 10): rows true label, columns predicted

    def __getitem__(self, key: str):  # score["macro_f1"] as well as score.macro_f1
        return getattr(self, key)


def score_submission(submission: Path, labels: Path) -> Score:
    """Macro-F1, accuracy, per-class precision/recall/F1/support and the confusion matrix of a submission."""
    submission, labels = Path(submission), Path(labels)
    truth, sub = read_labelled(labels), read_labelled(submission)
    check_same_ids(sub["row_id"], truth["row_id"], submission, labels)
    pred = truth[["row_id"]].merge(sub, on="row_id", how="left")["label"].to_numpy()  # in the labels' order
    y = truth["label"].to_numpy()
    classes = np.arange(N_CLASSES)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    return Score(
        macro_f1=macro_f1(y, pred),
        accuracy=accuracy(y, pred),
        per_class=pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}, index=classes),
        confusion=confusion_matrix(y, pred, labels=classes),
    )
