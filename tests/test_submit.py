"""Submission writing and validation, the ``submit`` and ``score`` commands (blending itself: test_blend.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import one_hot_logits

from competition.cli import main
from competition.data.load import load_competition
from competition.metrics import macro_f1
from competition.store.atomic import write_json, write_npz
from competition.store.runs import split_fingerprint

# --- hand-written runs, the submit command -------------------------------------------------------------------


def fake_run(
    workdir: Path, name: str, data: Path, models=("fusion", "image"), folds: int = 2, fold_of=None, test_rows=None,
    test_class=None, data_fingerprint=None,
) -> Path:  # fmt: skip
    """A run directory as ``run.py cv`` writes it, with logits made up: out-of-fold logits favour the true
    label, test logits favour ``test_class`` (default: row i -> class i % 10)."""
    comp = load_competition(data)
    fold_of = np.arange(comp.n_train) % folds if fold_of is None else fold_of
    m = comp.n_test if test_rows is None else test_rows
    target = np.arange(m) % 10 if test_class is None else np.full(m, test_class)
    run_dir = workdir / name
    meta = {
        "config": {"folds": folds, "models": list(models), "seed": 0},
        "data": str(data),
        "data_fingerprint": data_fingerprint or comp.fingerprint,
        "split_fingerprint": split_fingerprint(fold_of),
    }
    write_json(run_dir / "config.json", meta)
    rng = np.random.default_rng(len(name))
    for model in models:
        for k in range(folds):
            va = np.flatnonzero(fold_of == k)
            oof = one_hot_logits(comp.y[va], 2.0) + rng.normal(size=(len(va), 10))
            write_npz(
                run_dir / model / f"fold{k}.npz",
                val_idx=va,
                oof_logits=oof.astype(np.float32),
                test_logits=one_hot_logits(target, 2.0).astype(np.float32),
                result=json.dumps({"model": model, "fold": k}),
            )
    return run_dir


def submit(workdir: Path, data: Path, out: Path, *extra: str) -> int:
    return main(["submit", "--workdir", str(workdir), "--data", str(data), "--out", str(out), *extra])


def test_submit_writes_the_sample_format_in_row_order(tmp_path, tiny_data, capsys):
    # a sample whose row_ids are not sorted and whose lines end in CRLF: both must be kept as they are
    sample = pd.read_csv(tiny_data / "sample_submission.csv")
    sample = sample.iloc[::-1].reset_index(drop=True)
    (tiny_data / "sample_submission.csv").write_bytes(sample.to_csv(index=False, lineterminator="\r\n").encode())
    fake_run(tmp_path / "wd", "r1", tiny_data)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub", "--name", "mine") == 0
    written = (tmp_path / "sub" / "mine.csv").read_bytes()
    expected = "row_id,label\r\n" + "".join(f"{rid},{i % 10}\r\n" for i, rid in enumerate(sample["row_id"]))
    assert written == expected.encode()
    probs = np.load(tmp_path / "sub" / "mine.probs.npz")
    assert probs["probs"].shape == (len(sample), 10) and (probs["row_id"] == sample["row_id"]).all()
    comp = load_competition(tiny_data)
    assert probs["oof_probs"].shape == (comp.n_train, 10)  # the honest out-of-fold rows of what is written
    manifest = json.loads((tmp_path / "sub" / "mine.json").read_text())
    assert macro_f1(comp.y, probs["oof_probs"].argmax(1)) == pytest.approx(manifest["oof_macro_f1"], abs=1e-6)
    assert manifest["runs"][0]["name"] == "r1" and manifest["models"] == ["r1/fusion", "r1/image"]
    assert np.isclose(sum(manifest["weights"].values()), 1.0) and min(manifest["weights"].values()) >= 0
    assert manifest["data_fingerprint"] == load_competition(tiny_data).fingerprint
    assert manifest["oof_macro_f1"] > 0.5
    assert manifest["agreement"] == [
        {"a": "r1/fusion", "b": "r1/image", "oof": pytest.approx(manifest["agreement"][0]["oof"]), "test": 1.0,
         "shifted": False}
    ]  # fmt: skip
    out = capsys.readouterr().out
    assert "r1/fusion" in out and "equal blend" in out and "(written)" in out and "mine.csv" in out
    assert "warning" not in out


def test_submit_warns_when_models_disagree_on_the_test_rows(tmp_path, tiny_data, capsys):
    run = fake_run(tmp_path / "wd", "r1", tiny_data, models=("fusion", "image", "audio"))
    for k in range(2):  # the audio model's test predictions: one class everywhere, as if the test audio failed
        z = dict(np.load(run / "audio" / f"fold{k}.npz"))
        z["test_logits"] = one_hot_logits(np.full(len(z["test_logits"]), 3), 2.0).astype(np.float32)
        write_npz(run / "audio" / f"fold{k}.npz", **z)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: the test rows are not like the training rows" in out
    assert "r1/fusion / r1/audio" in out and "r1/image / r1/audio" in out and "r1/fusion / r1/image" not in out
    assert "leaving r1/audio out of the blend" in out
    # offsets fitted on the out-of-fold rows' confusions stand down on such test rows; --offsets on fits them
    assert "macro-F1 offsets off: the test rows are not like the training rows" in out
    manifest = json.loads((tmp_path / "sub" / "r1-equal.json").read_text())
    assert manifest["left_out"] == ["r1/audio"] and manifest["models"] == ["r1/fusion", "r1/image"]
    assert "offsets" not in manifest["decisions"]
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "on", "--offsets", "on") == 0
    assert "macro-F1 offsets off: the test" not in capsys.readouterr().out
    assert "offsets" in json.loads((tmp_path / "on" / "r1-equal.json").read_text())["decisions"]
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "kept", "--keep-shifted", "--blend", "equal") == 0
    manifest = json.loads((tmp_path / "kept" / "r1-equal.json").read_text())
    assert manifest["left_out"] == [] and len(manifest["models"]) == 3
    assert "leaving" not in capsys.readouterr().out


@pytest.mark.parametrize("bom", [False, True])
def test_submit_output_is_byte_identical_to_the_sample_when_labels_agree(tmp_path, tiny_data, bom):
    if bom:  # a sample saved with a UTF-8 byte order mark (Excel does): the submission keeps it
        sample = tiny_data / "sample_submission.csv"
        sample.write_bytes(b"\xef\xbb\xbf" + sample.read_bytes())
    fake_run(tmp_path / "wd", "r1", tiny_data, test_class=0)  # the sample's labels are all 0
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub", "--blend", "equal") == 0
    written = tmp_path / "sub" / "r1-equal.csv"
    assert written.read_bytes() == (tiny_data / "sample_submission.csv").read_bytes()


def test_submit_blends_several_runs_and_defaults_to_the_latest_finished(tmp_path, tiny_data, capsys):
    wd = tmp_path / "wd"
    old = fake_run(wd, "old", tiny_data, models=("audio",))
    new = fake_run(wd, "new", tiny_data, models=("fusion",))
    for i, run in enumerate([old, new]):  # "new" has the newest fold files
        for f in run.glob("*/*.npz"):
            os.utime(f, (1_000_000 + i, 1_000_000 + i))
    unfinished = fake_run(wd, "unfinished", tiny_data)
    (unfinished / "image" / "fold1.npz").unlink()
    assert submit(wd, tiny_data, tmp_path / "sub") == 0
    assert "run(s) new " in capsys.readouterr().out
    assert json.loads((tmp_path / "sub" / "new-equal.json").read_text())["models"] == ["new/fusion"]
    assert submit(wd, tiny_data, tmp_path / "sub", "--run", "old", "--run", "new", "--name", "both") == 0
    assert json.loads((tmp_path / "sub" / "both.json").read_text())["models"] == ["old/audio", "new/fusion"]
    # --models picks models by name or run/model; a missing fold of an excluded model does not matter
    assert submit(wd, tiny_data, tmp_path / "sub", "--run", "unfinished", "--models", "unfinished/fusion") == 0


def bad(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "case, message",
    [
        ("different_data", "different data folders"),
        ("different_split", "different fold assignments"),
        ("missing_fold", "fold(s) 1 of 2 missing"),
        ("test_shape", "test predictions have shape (59, 10)"),
        ("other_data", "not --data"),
        ("unknown_model", "'nope' is not a model"),
        ("no_runs", "no cv runs"),
        ("bad_name", "--name"),
        ("not_a_run", "run not found"),
    ],
)
def test_submit_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_data, capsys, case, message):
    wd, out = tmp_path / "wd", tmp_path / "sub"
    args = ["--run", "a"]
    if case != "no_runs":
        fake_run(wd, "a", tiny_data, test_rows=59 if case == "test_shape" else None)
    if case == "different_data":
        fake_run(wd, "b", tiny_data, data_fingerprint="0123456789abcdef")
        args += ["--run", "b"]
    if case == "different_split":
        fake_run(wd, "b", tiny_data, fold_of=(np.arange(240) // 7) % 2)
        args += ["--run", "b"]
    if case == "missing_fold":
        (wd / "a" / "image" / "fold1.npz").unlink()
    if case == "other_data":
        (tiny_data / "y_train.csv").write_text((tiny_data / "y_train.csv").read_text().replace("\n0,5\n", "\n0,4\n"))
    if case == "unknown_model":
        args += ["--models", "fusion,nope"]
    if case == "no_runs":
        wd.mkdir()
        args = []
    if case == "bad_name":
        args += ["--name", "../escape"]
    if case == "not_a_run":
        args = ["--run", "zzz"]
    err = bad(capsys, submit(wd, tiny_data, out, *args))
    assert message in err
    assert not out.exists() or not any(out.iterdir())


# --- score ---------------------------------------------------------------------------------------------------


def write_csv(path: Path, ids, labels) -> Path:
    pd.DataFrame({"row_id": ids, "label": labels}).to_csv(path, index=False)
    return path


def test_score_prints_metrics_per_class_and_confusion(tmp_path, capsys):
    ids = np.arange(100, 140)
    y = np.arange(40) % 10
    pred = y.copy()
    pred[:4] = (pred[:4] + 1) % 10  # 4 of 40 wrong: classes 0-3 predicted as 1-4
    labels = write_csv(tmp_path / "labels.csv", ids, y)
    sub = write_csv(tmp_path / "sub.csv", ids[::-1], pred[::-1])  # any row order: matched by row_id
    assert main(["score", str(sub), str(labels)]) == 0
    out = capsys.readouterr().out
    from sklearn.metrics import f1_score

    assert f"macro-F1 {f1_score(y, pred, average='macro'):.4f}" in out and "accuracy 0.9000" in out
    assert "per class" in out and "confusion matrix" in out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.iloc[1:], "1 row_id(s) of labels.csv missing"),
        (lambda d: pd.concat([d, d.iloc[:2]]), "2 duplicate row_id values"),
        (lambda d: pd.concat([d, pd.DataFrame({"row_id": [999], "label": [3]})]), "1 row_id(s) not in labels.csv"),
        (lambda d: d.assign(label=d["label"].where(d.index != 5, 10)), "not an integer 0-9"),
        (lambda d: d.assign(label=d["label"].astype(str).where(d.index != 5, "x")), "not an integer 0-9"),
        (lambda d: d.assign(label=d["label"].astype(float) + 0.5), "not an integer 0-9"),
        (lambda d: d.rename(columns={"label": "digit"}), "expected the header row_id,label"),
    ],
)
def test_score_bad_submission_is_one_line_exit_2(tmp_path, capsys, change, message):
    ids, y = np.arange(20), np.arange(20) % 10
    labels = write_csv(tmp_path / "labels.csv", ids, y)
    sub = tmp_path / "sub.csv"
    change(pd.DataFrame({"row_id": ids, "label": y})).to_csv(sub, index=False)
    assert message in bad(capsys, main(["score", str(sub), str(labels)]))


def test_score_reads_integral_float_labels_as_the_training_labels_are_read(tmp_path, capsys):
    """``9.0`` is the digit 9 in a holdout's labels, as in y_train.csv; ``9.5`` is refused (above)."""
    ids, y = np.arange(20), np.arange(20) % 10
    labels = write_csv(tmp_path / "labels.csv", ids, y.astype(float))
    sub = write_csv(tmp_path / "sub.csv", ids, y)
    assert main(["score", str(sub), str(labels)]) == 0
    assert "macro-F1 1.0000" in capsys.readouterr().out


def test_score_missing_file_is_a_user_error(tmp_path, capsys):
    labels = write_csv(tmp_path / "labels.csv", [1], [1])
    assert "file not found" in bad(capsys, main(["score", str(tmp_path / "none.csv"), str(labels)]))
    assert "a folder, not a file" in bad(capsys, main(["score", str(tmp_path), str(labels)]))


# --- a real (tiny) cv run end to end --------------------------------------------------------------------------


def test_submit_and_score_a_real_cv_run(tmp_path, tiny_data, capsys):
    from sklearn.metrics import f1_score

    from competition.config import load_config
    from competition.train.cv import run_cv

    cfg = load_config(None, {"epochs": 1, "folds": 2, "workers": 1, "models": "fusion,audio", "device": "cpu"})
    run_cv(cfg, tiny_data, tmp_path / "wd", "tiny", quiet=True)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub") == 0
    [written] = sorted((tmp_path / "sub").glob("*.csv"))
    manifest = json.loads(written.with_suffix(".json").read_text())
    # auto writes the blend with the best honest score (nested where fitted; the first of equal scores), and the
    # file is named after it
    blends = [c for c in manifest["candidates"] if c["blend"] in ("equal", "fitted", "stack")]
    best = max(blends, key=lambda c: c.get("nested_macro_f1", c["macro_f1"]))
    assert (manifest["blend"], manifest["average"]) == (best["blend"], best["space"])
    suffix = "+consensus" if manifest["consensus"]["applied"] else ""
    assert written.name == f"tiny-{best['blend']}{suffix}.csv"
    sub = pd.read_csv(written)
    sample = pd.read_csv(tiny_data / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and (sub["row_id"] == sample["row_id"]).all()
    assert sub["label"].between(0, 9).all() and sub["label"].dtype.kind == "i"
    # score against labels that differ from the submission on 6 known rows, written in another row order
    truth = sub["label"].to_numpy().copy()
    truth[:6] = (truth[:6] + 1) % 10
    labels = tmp_path / "labels.csv"
    pd.DataFrame({"row_id": sub["row_id"], "label": truth}).iloc[::-1].to_csv(labels, index=False)
    capsys.readouterr()
    assert main(["score", str(written), str(labels)]) == 0
    out = capsys.readouterr().out
    expected = f1_score(truth, sub["label"], average="macro", labels=range(10), zero_division=0)  # classes 0-9
    assert f"macro-F1 {expected:.4f}" in out and f"accuracy {(len(truth) - 6) / len(truth):.4f}" in out
