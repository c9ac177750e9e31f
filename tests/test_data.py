"""Loading and validating a competition folder: every bad input is one clear UserError (exit 2 from the CLI)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.data.duplicates import duplicate_groups, duplicate_ids, duplicate_summary
from competition.data.load import fit_audio_scaler, load_competition
from competition.utils.errors import UserError


def test_loads_tiny_competition(tiny_data):
    comp = load_competition(tiny_data)
    assert comp.image.shape == (240, 784) and comp.image.dtype == np.float32
    assert comp.audio.shape == (240, 507) and comp.test_audio.shape == (60, 507)
    assert 0.0 <= comp.image.min() and comp.image.max() <= 1.0 and comp.image.max() > 0.9
    assert set(np.unique(comp.y)) <= set(range(10))
    assert len(comp.fingerprint) == 16


def test_float64_and_unit_range_images_are_accepted(tiny_data):
    raw = np.load(tiny_data / "x_train_wr.npy")
    np.save(tiny_data / "x_train_wr.npy", raw.astype(np.float64) / 255.0)  # already in [0, 1]
    np.save(tiny_data / "x_test_wr.npy", np.load(tiny_data / "x_test_wr.npy").astype(np.float64) / 255.0)
    np.save(tiny_data / "x_train_sp.npy", np.load(tiny_data / "x_train_sp.npy").astype(np.float64))
    comp = load_competition(tiny_data)
    np.testing.assert_allclose(comp.image, raw / 255.0, atol=1e-6)  # detected [0, 1]: not divided again
    assert comp.audio.dtype == np.float32


def test_float_images_in_0_255_are_scaled(tiny_data):
    raw = np.load(tiny_data / "x_train_wr.npy")
    np.save(tiny_data / "x_train_wr.npy", raw.astype(np.float32))
    np.save(tiny_data / "x_test_wr.npy", np.load(tiny_data / "x_test_wr.npy").astype(np.float32))
    np.testing.assert_allclose(load_competition(tiny_data).image, raw / 255.0, atol=1e-6)


def test_each_image_array_is_scaled_on_its_own(tiny_data):
    raw = np.load(tiny_data / "x_train_wr.npy")
    np.save(tiny_data / "x_train_wr.npy", raw.astype(np.float32) / 255.0)  # train 0-1 floats, test stays uint8
    comp = load_competition(tiny_data)
    np.testing.assert_allclose(comp.image, raw / 255.0, atol=1e-6)
    np.testing.assert_allclose(comp.test_image, np.load(tiny_data / "x_test_wr.npy") / 255.0, atol=1e-6)


def test_train_and_test_images_on_irreconcilable_scales_are_refused(tiny_data):
    test = np.load(tiny_data / "x_test_wr.npy")
    np.save(tiny_data / "x_test_wr.npy", test.astype(np.float32) / 255.0 / 255.0)  # divided twice: all near 0
    with pytest.raises(UserError, match="x_train_wr.npy and x_test_wr.npy are on different pixel scales"):
        load_competition(tiny_data)


def test_audio_in_the_canonical_cube_layout_is_flattened_and_the_transposed_one_refused(tiny_data):
    raw = np.load(tiny_data / "x_train_sp.npy")
    np.save(tiny_data / "x_train_sp.npy", raw.reshape(-1, 39, 13))  # frames x coefficients
    np.testing.assert_array_equal(load_competition(tiny_data).audio, raw)
    np.save(tiny_data / "x_train_sp.npy", raw.reshape(-1, 39, 13).transpose(0, 2, 1))  # (N, 13, 39)
    with pytest.raises(UserError, match=re.escape("x_train_sp.npy: shape (240, 13, 39) is an ambiguous layout")):
        load_competition(tiny_data)


def test_image_cubes_are_flattened(tiny_data):
    raw = np.load(tiny_data / "x_train_wr.npy")
    np.save(tiny_data / "x_train_wr.npy", raw.reshape(-1, 28, 28))
    assert load_competition(tiny_data).image.shape == (240, 784)


def test_labels_are_matched_to_rows_by_row_id_not_by_position(tiny_data):
    ordered = load_competition(tiny_data)
    labels = pd.read_csv(tiny_data / "y_train.csv")
    labels.sample(frac=1, random_state=0).to_csv(tiny_data / "y_train.csv", index=False)  # same ids, other order
    shuffled = load_competition(tiny_data)
    np.testing.assert_array_equal(shuffled.y, ordered.y)
    np.testing.assert_array_equal(shuffled.row_ids, ordered.row_ids)
    np.testing.assert_array_equal(shuffled.image, ordered.image)


def test_test_arrays_follow_the_sample_submissions_row_order(tiny_data):
    ordered = load_competition(tiny_data)
    sample = pd.read_csv(tiny_data / "sample_submission.csv").sample(frac=1, random_state=1)
    sample.to_csv(tiny_data / "sample_submission.csv", index=False)
    shuffled = load_competition(tiny_data)  # test row j is the array row named by the sample's j-th row_id
    np.testing.assert_array_equal(shuffled.test_image, ordered.test_image[sample["row_id"].to_numpy()])
    np.testing.assert_array_equal(shuffled.test_audio, ordered.test_audio[sample["row_id"].to_numpy()])


def test_increasing_row_ids_other_than_0_to_n_keep_the_array_order(tiny_data):
    labels = pd.read_csv(tiny_data / "y_train.csv")
    labels.assign(row_id=labels["row_id"] * 3 + 1000).to_csv(tiny_data / "y_train.csv", index=False)
    comp = load_competition(tiny_data)
    np.testing.assert_array_equal(comp.y, labels["label"].to_numpy())
    assert comp.row_ids[0] == 1000


@pytest.mark.parametrize("name", ["y_train.csv", "sample_submission.csv"])
@pytest.mark.parametrize("ids", ["shuffled_other", "text"])
def test_row_ids_that_cannot_be_matched_to_rows_are_refused(tiny_data, name, ids):
    df = pd.read_csv(tiny_data / name)
    new = df["row_id"] + 1000 if ids == "shuffled_other" else "r" + df["row_id"].astype(str)
    df.assign(row_id=new).iloc[::-1].to_csv(tiny_data / name, index=False)
    with pytest.raises(UserError, match=f"{name}: row_id values cannot be matched to the rows") as err:
        load_competition(tiny_data)
    assert "\n" not in str(err.value) and "fix" in str(err.value)


def _break(tiny_data: Path, name: str, how):
    path = tiny_data / name
    if name.endswith(".npy"):
        out = how(np.load(path))
        if out is not None:
            np.save(path, out)
    else:
        out = how(pd.read_csv(path))
        if out is not None:
            out.to_csv(path, index=False)


def _nan(a):
    a = a.astype(np.float32)
    a[3, 7] = np.nan
    return a


def _inf(a):
    a = a.astype(np.float32)
    a[5, 0] = np.inf
    return a


def _set(df, col, i, value):
    df[col] = df[col].astype(object)
    df.loc[i, col] = value
    return df


CASES = [
    ("x_train_sp.npy", lambda a: a[:, :500], "expected shape (rows, 507)"),
    ("x_train_wr.npy", lambda a: a[:, :783], "expected shape (rows, 784)"),
    ("x_train_wr.npy", lambda a: a[:-1], "rows but y_train.csv has"),
    ("x_test_sp.npy", lambda a: a[:-2], "rows but sample_submission.csv has"),
    ("x_train_sp.npy", _nan, "NaN/inf"),
    ("x_test_sp.npy", _inf, "NaN/inf"),
    ("x_train_wr.npy", lambda a: a.astype(np.float32) * 2.0, "pixel values span"),
    ("y_train.csv", lambda d: d.assign(label=d.label.where(d.index != 4, 10)), "not an integer 0-9"),
    ("y_train.csv", lambda d: d.assign(label=d.label.where(d.index != 4, -1)), "not an integer 0-9"),
    ("y_train.csv", lambda d: _set(d, "label", 2, 3.5), "not an integer 0-9"),
    ("y_train.csv", lambda d: _set(d, "label", 2, "seven"), "not an integer 0-9"),
    ("y_train.csv", lambda d: _set(d, "row_id", 9, 8), "duplicate row_id"),
    ("y_train.csv", lambda d: _set(d, "row_id", 9, None), "missing row_id"),
    ("y_train.csv", lambda d: d.iloc[:-3], "rows but y_train.csv has"),
    ("sample_submission.csv", lambda d: d.rename(columns={"label": "target"}), "expected the header row_id,label"),
    ("sample_submission.csv", lambda d: _set(d, "row_id", 1, 0), "duplicate row_id"),
]


@pytest.mark.parametrize("name,how,message", CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_bad_input_is_one_clear_error(tiny_data, name, how, message):
    _break(tiny_data, name, how)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_competition(tiny_data)
    assert "\n" not in str(err.value) and "fix" in str(err.value)


@pytest.mark.parametrize("name", ["x_train_wr.npy", "y_train.csv", "x_test_sp.npy", "sample_submission.csv"])
def test_missing_file(tiny_data, name):
    (tiny_data / name).unlink()
    with pytest.raises(UserError, match=f"{name}: file not found"):
        load_competition(tiny_data)


def test_corrupt_npy(tiny_data):
    (tiny_data / "x_train_sp.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match="unreadable or corrupt"):
        load_competition(tiny_data)
    (tiny_data / "x_train_sp.npy").write_bytes(np.load(tiny_data / "x_test_sp.npy").tobytes()[:1000])
    with pytest.raises(UserError, match="unreadable or corrupt"):
        load_competition(tiny_data)


def test_truncated_npy(tiny_data):
    path = tiny_data / "x_train_wr.npy"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="x_train_wr.npy: unreadable or corrupt"):
        load_competition(tiny_data)


def test_cli_reports_one_line_and_exit_2(tiny_data, tmp_path, root):
    _break(tiny_data, "y_train.csv", lambda d: d.assign(label=d.label.where(d.index != 0, 12)))
    proc = subprocess.run(
        [sys.executable, "run.py", "cv", "--data", str(tiny_data), "--workdir", str(tmp_path / "wd")],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "y_train.csv" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_duplicate_groups_join_rows_sharing_any_modality():
    image = np.array([[0, 0], [1, 1], [0, 0], [2, 2], [3, 3]])
    audio = np.array([[5.0], [6.0], [7.0], [6.0], [8.0]])
    # rows 0 and 2 share an image; rows 1 and 3 share a recording; row 4 stands alone
    groups = duplicate_groups(image, audio)
    assert groups[0] == groups[2] and groups[1] == groups[3]
    assert len({groups[0], groups[1], groups[4]}) == 3
    assert list(duplicate_ids(audio)) == [0, 1, 2, 1, 3]


def test_duplicate_summary_on_shipped_data_counts_repeated_recordings(tiny_data):
    s = duplicate_summary(load_competition(tiny_data))
    assert s["image"]["distinct"] == s["image"]["rows"] == 240
    assert s["audio"]["distinct"] < 240 and s["audio"]["rows_in_duplicate_sets"] > 0


def test_scaler_uses_training_rows_only():
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(100, 507)).astype(np.float32)
    audio[80:] += 100.0  # validation rows far away: leaking them would move the mean
    train_idx = np.arange(80)
    scaler = fit_audio_scaler(audio, train_idx)
    np.testing.assert_allclose(scaler.mean_, audio[:80].mean(axis=0), rtol=1e-5, atol=1e-5)
    assert np.abs(scaler.mean_).max() < 1.0
