"""Blending (hand-made logits with known answers), submission writing and validation, ``submit`` and ``score``."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax, softmax

from competition.artifacts import write_json, write_npz
from competition.blend import (
    agreement_shift,
    blend_models,
    caruana_weights,
    combine,
    fold_average,
    nested_caruana,
    odd_ones_out,
    to_space,
)
from competition.cv import split_fingerprint
from competition.data import load_competition
from run import main

# --- pure blending -----------------------------------------------------------------------------------------


def one_hot_logits(labels: np.ndarray, margin: float) -> np.ndarray:
    """Logits that put ``margin`` on each row's label and 0 elsewhere."""
    out = np.zeros((len(labels), 10))
    out[np.arange(len(labels)), labels] = margin
    return out


def complementary(n: int = 200, seed: int = 0):
    """Models a and b: each confidently right on its half of the rows and mildly wrong on the other half,
    so either alone is right on half the rows and their equal blend on all; c is confidently wrong."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    wrong = (y + 1) % 10
    half = np.arange(n) < n // 2
    a = np.where(half[:, None], one_hot_logits(y, 6.0), one_hot_logits(wrong, 1.0))
    b = np.where(half[:, None], one_hot_logits(wrong, 1.0), one_hot_logits(y, 6.0))
    c = one_hot_logits((y + 5) % 10, 8.0)
    return y, a, b, c


def test_equal_blend_of_complementary_models_is_right_everywhere():
    y, a, b, _ = complementary()
    assert (a.argmax(1) == y).mean() == 0.5 and (b.argmax(1) == y).mean() == 0.5
    for space in ("logits", "probs"):
        probs = combine(np.stack([to_space(a, space), to_space(b, space)]), np.array([0.5, 0.5]), space)
        assert (probs.argmax(1) == y).all()
        np.testing.assert_allclose(probs.sum(1), 1.0)
    # the two spaces are the arithmetic and the normalised geometric mean of the probabilities
    pa, pb = softmax(a, axis=1), softmax(b, axis=1)
    probs = combine(np.stack([to_space(a, "probs"), to_space(b, "probs")]), np.array([0.25, 0.75]), "probs")
    np.testing.assert_allclose(probs, 0.25 * pa + 0.75 * pb)
    geo = pa**0.25 * pb**0.75
    logits = combine(np.stack([to_space(a, "logits"), to_space(b, "logits")]), np.array([0.25, 0.75]), "logits")
    np.testing.assert_allclose(logits, geo / geo.sum(1, keepdims=True))


def test_fold_average_in_each_space():
    rng = np.random.default_rng(1)
    folds = rng.normal(size=(3, 7, 10)) * 3
    np.testing.assert_allclose(fold_average(folds, "probs"), softmax(folds, axis=2).mean(0))
    np.testing.assert_allclose(softmax(fold_average(folds, "logits"), axis=1), softmax(folds.mean(0), axis=1))
    np.testing.assert_allclose(fold_average(folds, "logits"), log_softmax(folds, axis=2).mean(0))


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_caruana_finds_the_complementary_pair_and_drops_the_bad_model(space):
    y, a, b, c = complementary()
    w = caruana_weights(np.stack([to_space(m, space) for m in (c, a, b)]), y, space)
    np.testing.assert_allclose(w, [0.0, 0.5, 0.5])


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_caruana_keeps_the_single_best_model_when_others_only_hurt(space):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 300)
    good = one_hot_logits(y, 3.0) + rng.normal(size=(300, 10)) * 0.1
    noise = [rng.normal(size=(300, 10)) * 5 for _ in range(2)]
    w = caruana_weights(np.stack([to_space(m, space) for m in (noise[0], good, noise[1])]), y, space)
    np.testing.assert_allclose(w, [0.0, 1.0, 0.0])


@pytest.mark.parametrize("seed", range(5))
def test_weights_are_non_negative_and_sum_to_one(seed):
    rng = np.random.default_rng(seed)
    n, k = 120, 3
    y = rng.integers(0, 10, n)
    stacked = np.stack([one_hot_logits(y, rng.uniform(0, 2)) + rng.normal(size=(n, 10)) for _ in range(4)])
    fold_of = rng.permutation(np.arange(n) % k)
    for space in ("logits", "probs"):
        s = to_space(stacked, space)
        rounds = int(rng.integers(1, 30))
        w = caruana_weights(s, y, space, rounds)
        assert w.shape == (4,) and (w >= 0).all() and np.isclose(w.sum(), 1.0)
        assert any(np.allclose(w * s, np.round(w * s)) for s in range(1, rounds + 1))  # counts / steps
        _, fold_w = nested_caruana(s, y, fold_of, space, rounds)
        assert fold_w.shape == (k, 4) and (fold_w >= 0).all() and np.allclose(fold_w.sum(1), 1.0)


def test_nested_score_fits_each_fold_without_its_rows():
    rng = np.random.default_rng(3)
    n = 150
    y = rng.integers(0, 10, n)
    stacked = to_space(np.stack([one_hot_logits(y, 1.0) + rng.normal(size=(n, 10)) for _ in range(3)]), "probs")
    fold_of = np.arange(n) % 3
    nested, fold_w = nested_caruana(stacked, y, fold_of, "probs")
    for k in range(3):
        fit, held = fold_of != k, fold_of == k
        w = caruana_weights(stacked[:, fit], y[fit], "probs")
        np.testing.assert_allclose(fold_w[k], w)
        np.testing.assert_allclose(nested[held], combine(stacked[:, held], w, "probs"))


def test_blend_models_preserves_test_row_order_and_reports_every_candidate():
    y, a, b, c = complementary(n=100)
    m = 30
    target = np.arange(m) % 10  # test row i should come out as class i % 10
    test = {name: np.stack([one_hot_logits(target, 2.0)] * 2) for name in ("a", "b", "c")}
    res = blend_models({"a": a, "b": b, "c": c}, test, y, np.arange(100) % 2)
    assert [s.name for s in res.singles] == ["a", "b", "c"]
    assert [(x.name, x.space) for x in res.blends] == [
        ("equal", "logits"),
        ("fitted", "logits"),
        ("equal", "probs"),
        ("fitted", "probs"),
    ]
    assert res.chosen.name == "fitted" and res.chosen.nested_f1 == 1.0  # c sinks the equal blend
    np.testing.assert_allclose(res.chosen.weights, [0.5, 0.5, 0.0])
    assert res.test_probs.shape == (m, 10) and np.allclose(res.test_probs.sum(1), 1.0)
    assert (res.test_probs.argmax(1) == target).all()


def test_agreement_shift_flags_the_pairs_with_a_model_whose_test_inputs_changed():
    rng = np.random.default_rng(0)
    y, y_test = rng.integers(0, 10, 600), rng.integers(0, 10, 300)
    right = one_hot_logits(y, 3.0)  # (N, 10): every model right out of fold
    oof = {m: right + 0.1 * rng.normal(size=right.shape) for m in ("fusion", "image", "audio")}
    test = {m: np.stack([one_hot_logits(y_test, 3.0)] * 2) for m in ("fusion", "image")}  # (K, M, 10)
    noisy = np.where(rng.random(300) < 0.7, rng.integers(0, 10, 300), y_test)  # audio: 70% of test rows guessed
    test["audio"] = np.stack([one_hot_logits(noisy, 3.0)] * 2)
    pairs = {(a.a, a.b): a for a in agreement_shift(oof, test)}
    assert set(pairs) == {("fusion", "image"), ("fusion", "audio"), ("image", "audio")}
    assert pairs["fusion", "image"].oof == pairs["fusion", "image"].test == 1.0
    assert not pairs["fusion", "image"].shifted
    assert pairs["fusion", "audio"].shifted and pairs["image", "audio"].shifted
    assert pairs["image", "audio"].test == pytest.approx((noisy == y_test).mean())
    assert odd_ones_out(list(pairs.values())) == ["audio"]  # the others still agree: audio is the one that moved
    everyone = [dataclasses.replace(a, shifted=True) for a in pairs.values()]
    assert odd_ones_out(everyone) == []  # every pair parts: nothing tells which models moved
    assert odd_ones_out([pairs["image", "audio"]]) == []  # two models: either could have moved
    # a small drop, well within chance on 300 rows, is not a shift
    test["audio"] = np.stack([one_hot_logits(np.where(np.arange(300) < 6, (y_test + 1) % 10, y_test), 3.0)] * 2)
    assert not any(a.shifted for a in agreement_shift(oof, test))


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
    manifest = json.loads((tmp_path / "sub" / "mine.json").read_text())
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
    manifest = json.loads((tmp_path / "sub" / "r1-equal.json").read_text())
    assert manifest["left_out"] == ["r1/audio"] and manifest["models"] == ["r1/fusion", "r1/image"]
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "kept", "--keep-shifted", "--blend", "equal") == 0
    manifest = json.loads((tmp_path / "kept" / "r1-equal.json").read_text())
    assert manifest["left_out"] == [] and len(manifest["models"]) == 3
    assert "leaving" not in capsys.readouterr().out


def test_submit_output_is_byte_identical_to_the_sample_when_labels_agree(tmp_path, tiny_data):
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
        (lambda d: pd.concat([d, d.iloc[:2]]), "2 duplicate row_id(s)"),
        (lambda d: pd.concat([d, pd.DataFrame({"row_id": [999], "label": [3]})]), "1 row_id(s) not in labels.csv"),
        (lambda d: d.assign(label=d["label"].where(d.index != 5, 10)), "not an integer 0-9"),
        (lambda d: d.assign(label=d["label"].astype(str).where(d.index != 5, "x")), "not an integer 0-9"),
        (lambda d: d.assign(label=d["label"].astype(float)), "not an integer 0-9"),
        (lambda d: d.rename(columns={"label": "digit"}), "expected the header row_id,label"),
    ],
)
def test_score_bad_submission_is_one_line_exit_2(tmp_path, capsys, change, message):
    ids, y = np.arange(20), np.arange(20) % 10
    labels = write_csv(tmp_path / "labels.csv", ids, y)
    sub = tmp_path / "sub.csv"
    change(pd.DataFrame({"row_id": ids, "label": y})).to_csv(sub, index=False)
    assert message in bad(capsys, main(["score", str(sub), str(labels)]))


def test_score_missing_file_is_a_user_error(tmp_path, capsys):
    labels = write_csv(tmp_path / "labels.csv", [1], [1])
    assert "file not found" in bad(capsys, main(["score", str(tmp_path / "none.csv"), str(labels)]))


# --- a real (tiny) cv run end to end --------------------------------------------------------------------------


def test_submit_and_score_a_real_cv_run(tmp_path, tiny_data, capsys):
    from competition.config import load_config
    from competition.cv import run_cv

    cfg = load_config(None, {"epochs": 1, "folds": 2, "workers": 1, "models": "fusion,audio", "device": "cpu"})
    run_cv(cfg, tiny_data, tmp_path / "wd", "tiny", quiet=True)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub") == 0
    written = sorted((tmp_path / "sub").glob("*.csv"))
    assert len(written) == 1 and written[0].name in ("tiny-equal.csv", "tiny-fitted.csv")
    sub = pd.read_csv(written[0])
    sample = pd.read_csv(tiny_data / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns) and (sub["row_id"] == sample["row_id"]).all()
    assert sub["label"].between(0, 9).all() and sub["label"].dtype.kind == "i"
    capsys.readouterr()
    assert main(["score", str(written[0]), str(written[0])]) == 0  # scored against itself: perfect
    assert "accuracy 1.0000" in capsys.readouterr().out
