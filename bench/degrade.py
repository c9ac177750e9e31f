"""Make a degraded copy of a competition folder, to develop and measure models that must survive noise.

The copy has the same six files, shapes and dtypes (labels and sample submission byte for byte unless
``--holdout``), so ``python3 run.py cv --data OUT`` and ``run.py submit --data OUT`` work on it unchanged.

- audio: noise at a signal-to-noise ratio drawn per recording from ``--snr`` (training rows) or
  ``--test-snr`` (test rows); ``inf`` keeps a recording clean. ``--noise babble`` (default) mixes in another
  recording, an interfering talker that misleads a model; ``white`` adds Gaussian noise, which mostly blurs.
  The data holds MFCCs, not waveforms, so the SNR is that of the MFCC values (noise power = row power /
  10^(SNR/10)). A recording that appears in several rows (the data repeats each ~4.5 times) gets the same
  noise in all of them: byte-identical rows stay identical, so the grouped folds still keep a recording on
  one side of every split (fresh noise per row would leak recordings across folds).
- images: an occluding square of one random grey level, 1/2 to 1 times ``--patch`` pixels wide, on a share
  ``--occlude`` of the rows, and Gaussian pixel noise with a std drawn per row uniformly in
  0..``--pixel-noise`` (0-255 units), clipped back to the pixel range.
- a shift between train and test: the ``--test-*`` flags (noisier test rows by default); the data
  carries no speaker ids, but ``--holdout-speakers`` below holds out speaker-like clusters.
- ``--holdout SHARE``: the test rows become whole recordings taken out of the training rows (about SHARE of
  them), degraded as test rows, with their labels in ``holdout_labels.csv``: the train -> test shift can then
  be scored (``run.py score`` or ``bench/robust_figures.py``), which out-of-fold scores cannot show.
- ``--holdout-speakers N``: the same, but the test rows are N whole speaker-like clusters of the audio
  (``competition/speakers.py``, ``--speakers`` clusters in all, chosen by ``--seed``): new speakers, never
  heard in the training rows. ``bench/speaker_testbed.py`` makes such copies and measures them.

``degrade.json`` (the flags) and ``degrade_rows.csv`` (each row's part, row_id, SNR, occlusion and
pixel-noise std) are written beside the six files; the loader ignores them.

    python3 bench/degrade.py --out /tmp/wsd_degraded
    python3 bench/degrade.py --out DIR --holdout 0.2 --snr inf,10,0 --test-snr 0,-10 --noise white --seed 1
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pandas as pd

from competition.data.duplicates import duplicate_groups, duplicate_ids
from competition.data.load import FILES, IMAGE_SIDE
from competition.splits.speakers import speaker_clusters
from competition.store.atomic import write_bytes, write_json, write_text
from competition.utils.paths import default_data


def noisy_audio(
    audio: np.ndarray, snrs: list[float], kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 507) MFCCs with noise at an SNR (dB) drawn per distinct recording; also each row's SNR.

    ``white``: Gaussian noise. ``babble``: another recording of the same rows (usually another digit)
    mixed in, an interfering talker, which misleads a model instead of only blurring its input.
    """
    ids = duplicate_ids(audio)  # equal rows share an id, hence their SNR and their noise
    n_rec = ids.max() + 1
    snr_rec = np.asarray(snrs, dtype=np.float64)[rng.integers(len(snrs), size=n_rec)]
    if kind == "white":
        noise_rec = rng.standard_normal((n_rec, audio.shape[1]))
    else:
        first = np.zeros(n_rec, dtype=np.int64)
        first[ids[::-1]] = np.arange(len(ids))[::-1]  # a row holding each recording
        other = (np.arange(n_rec) + rng.integers(1, max(n_rec, 2), size=n_rec)) % n_rec  # never itself
        noise_rec = audio[first[other]].astype(np.float64)
    snr = snr_rec[ids]  # (N,)
    signal = np.mean(audio.astype(np.float64) ** 2, axis=1)  # (N,) row power
    noise = noise_rec[ids]
    gain = np.sqrt(signal / (np.mean(noise**2, axis=1) * 10 ** (snr / 10)))  # inf dB -> 0
    return (audio + gain[:, None] * noise).astype(audio.dtype), snr


def occlude(image: np.ndarray, share: float, patch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 784) images with a square of one random grey level on a share of the rows; also which rows."""
    n, side = len(image), IMAGE_SIDE
    hit = rng.random(n) < share
    size = rng.integers(max(1, patch // 2), patch + 1, size=n)
    top, left = rng.random(n) * (side - size + 1), rng.random(n) * (side - size + 1)
    level = rng.random(n) * _pixel_max(image)
    out = image.reshape(n, side, side).copy()
    for i in np.flatnonzero(hit):
        t, lft, s = int(top[i]), int(left[i]), size[i]
        out[i, t : t + s, lft : lft + s] = level[i]
    return out.reshape(n, -1), hit


def pixel_noise(image: np.ndarray, max_std: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N, 784) images plus Gaussian noise of a per-row std uniform in 0..max_std (0-255 units), clipped."""
    n, top = len(image), _pixel_max(image)
    std = rng.random(n) * max_std * (top / 255.0)
    noisy = image.astype(np.float64) + std[:, None] * rng.standard_normal(image.shape)
    noisy = np.clip(noisy, 0, top)
    if image.dtype.kind in "ui":
        noisy = np.rint(noisy)
    return noisy.astype(image.dtype), std * (255.0 / top)


def _pixel_max(image: np.ndarray) -> float:
    return 1.0 if image.dtype.kind == "f" and image.max() <= 1.0 else 255.0


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    write_bytes(path, buf.getvalue())


def split_holdout(
    image: np.ndarray, audio: np.ndarray, share: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held) row indices: whole duplicate groups (a recording and its copies) of about ``share`` of
    the rows are held out, so no held-out recording is also a training row."""
    groups = duplicate_groups(image, audio)
    order = rng.permutation(groups.max() + 1)
    sizes = np.bincount(groups)[order]
    chosen = order[: np.searchsorted(np.cumsum(sizes), share * len(groups)) + 1]
    held = np.isin(groups, chosen)
    return np.flatnonzero(~held), np.flatnonzero(held)


def split_speakers(
    audio: np.ndarray, y: np.ndarray, n_held: int, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep, held, cluster) row indices and each row's speaker-like cluster: ``n_held`` of ``k`` clusters,
    drawn by ``rng``, are held out, so no held-out speaker (nor recording) is heard in the training rows."""
    cluster = speaker_clusters(audio, y, k, seed=0, spread=True)  # not seeded: the choice of clusters is
    chosen = rng.permutation(k)[:n_held]
    held = np.isin(cluster, chosen)
    return np.flatnonzero(~held), np.flatnonzero(held), cluster


def degrade(src: Path, out: Path, args: argparse.Namespace) -> pd.DataFrame:
    """Write the degraded copy of ``src`` to ``out``; returns each row's degradation (train and test rows)."""
    # One random stream per part and modality: changing the audio flags leaves the images as they were.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(args.seed).spawn(5)]
    arrays = {name: np.load(src / f"{name}.npy") for name in ("x_train_wr", "x_train_sp", "x_test_wr", "x_test_sp")}
    labels = pd.read_csv(src / "y_train.csv", dtype=str)
    sample = pd.read_csv(src / "sample_submission.csv", dtype=str)
    speaker = None
    if args.holdout > 0 or args.holdout_speakers:  # labelled test rows: the training rows of the held-out ones
        img, aud = arrays["x_train_wr"], arrays["x_train_sp"]
        if args.holdout_speakers:
            y = labels["label"].astype(np.int64).to_numpy()
            keep, held, speaker = split_speakers(aud, y, args.holdout_speakers, args.speakers, rngs[4])
        else:
            keep, held = split_holdout(img.reshape(len(img), -1), aud, args.holdout, rngs[4])
        arrays = {"x_train_wr": img[keep], "x_train_sp": aud[keep], "x_test_wr": img[held], "x_test_sp": aud[held]}
        write_text(out / "holdout_labels.csv", labels.iloc[held].to_csv(index=False))
        sample = labels.iloc[held].assign(label="0")
        labels = labels.iloc[keep]
        write_text(out / "y_train.csv", labels.to_csv(index=False))
        write_text(out / "sample_submission.csv", sample.to_csv(index=False))
    else:  # byte for byte
        for name in ("y_train.csv", "sample_submission.csv"):
            write_bytes(out / name, (src / name).read_bytes())
    tables = []
    parts = [
        ("train", rngs[:2], args.snr, args.occlude, args.pixel_noise, labels["row_id"]),
        ("test", rngs[2:4], args.test_snr, args.test_occlude, args.test_pixel_noise, sample["row_id"]),
    ]
    for part, (audio_rng, image_rng), snrs, share, noise, ids in parts:
        image, audio = arrays[f"x_{part}_wr"], arrays[f"x_{part}_sp"]
        shape = image.shape  # (N, 784) or (N, 28, 28): kept as it was
        audio, snr = noisy_audio(audio, snrs, args.noise, audio_rng)
        image, hit = occlude(image.reshape(len(image), -1), share, args.patch, image_rng)
        image, std = pixel_noise(image, noise, image_rng)
        _save_npy(out / f"x_{part}_sp.npy", audio)
        _save_npy(out / f"x_{part}_wr.npy", image.reshape(shape))
        table = {"part": part, "row_id": ids.to_numpy(), "snr_db": snr, "occluded": hit, "pixel_noise_std": std}
        if speaker is not None:  # the speaker-like cluster of each row (the held-out ones are the test rows')
            table["speaker"] = speaker[keep if part == "train" else held]
        tables.append(pd.DataFrame(table).round({"pixel_noise_std": 2}))
    table = pd.concat(tables, ignore_index=True)
    write_text(out / "degrade_rows.csv", table.to_csv(index=False))
    settings = {k: ",".join(f"{x:g}" for x in v) if isinstance(v, list) else v for k, v in vars(args).items()}
    write_json(out / "degrade.json", settings)
    return table


def _snr_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]  # float("inf") parses "inf"
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated dB values such as inf,10,0, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(default_data()), help="source competition folder (default: the shipped data)")
    p.add_argument("--out", required=True, help="folder for the degraded copy (created; its six files replaced)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snr", type=_snr_list, default=_snr_list("inf,10,5,0"), help="train SNRs in dB (inf = clean)")
    p.add_argument("--test-snr", type=_snr_list, default=_snr_list("0,-5,-10"), help="test SNRs in dB")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="share of training rows (whole recordings) to make the test rows, "
        "degraded as test rows, with their labels in holdout_labels.csv (0 = keep the competition's test rows)",
    )
    p.add_argument(
        "--holdout-speakers",
        type=int,
        default=0,
        help="hold out this many whole speaker-like clusters of the audio as the labelled test rows, "
        "degraded as test rows (new speakers; 0 = off)",
    )
    p.add_argument("--speakers", type=int, default=6, help="speaker-like clusters to find (default 6, as FSDD)")
    p.add_argument("--noise", choices=["babble", "white"], default="babble", help="audio noise kind")
    p.add_argument("--occlude", type=float, default=0.25, help="share of training images with a patch")
    p.add_argument("--test-occlude", type=float, default=0.5, help="share of test images with a patch")
    p.add_argument("--patch", type=int, default=12, help="largest patch side in pixels")
    p.add_argument("--pixel-noise", type=float, default=60, help="largest pixel-noise std on train rows (0-255)")
    p.add_argument("--test-pixel-noise", type=float, default=100, help="largest pixel-noise std on test rows")
    args = p.parse_args(argv)
    for flag in ("occlude", "test_occlude", "holdout"):
        if not 0 <= getattr(args, flag) <= 1:
            p.error(f"--{flag.replace('_', '-')} must be a share in [0, 1]")
    if args.holdout_speakers and (args.holdout or not 0 < args.holdout_speakers < args.speakers):
        p.error("--holdout-speakers must be in 1..--speakers - 1, and not combined with --holdout")
    if not 1 <= args.patch <= IMAGE_SIDE:
        p.error(f"--patch must be in 1..{IMAGE_SIDE} pixels")
    if args.pixel_noise < 0 or args.test_pixel_noise < 0:
        p.error("--pixel-noise and --test-pixel-noise must be >= 0")
    if not args.snr or not args.test_snr:
        p.error("--snr and --test-snr need at least one value")
    src, out = Path(args.data), Path(args.out)
    missing = [f for f in FILES if not (src / f).is_file()]
    if missing:
        p.error(f"--data {src}: missing {', '.join(missing)}; fix: point --data at a competition folder")
    if out.resolve() == src.resolve():
        p.error(f"--out {out} is the source folder; fix: pass another folder")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table = degrade(Path(args.data), Path(args.out), args)
    test = table[table["part"] == "test"]
    table = table[table["part"] == "train"]
    snr = table["snr_db"].value_counts().sort_index()
    held = "test"
    if args.holdout or args.holdout_speakers:
        held = f"held-out (labels in {Path(args.out) / 'holdout_labels.csv'})"
    print(f"wrote {args.out}: {len(table)} training rows, {len(test)} {held} rows")
    print("  audio SNR (dB) of training rows: " + ", ".join(f"{k:g}: {v}" for k, v in snr.items()))
    print(f"  occluded training images: {int(table['occluded'].sum())}")
    print(f"  pixel-noise std of training images: mean {table['pixel_noise_std'].mean():.1f} (0-255)")
    print(f"  settings in {Path(args.out) / 'degrade.json'}")


if __name__ == "__main__":
    main()
