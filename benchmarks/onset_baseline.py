"""The non-learned onset cross-correlation peer on synthetic clips at the easy and hard levels.

    .venv/bin/python benchmarks/onset_baseline.py [--clips 30] [--seconds 60] [--seed 0]
        [--levels easy hard] [--config configs/quickstart.yaml] [--samples-per-video 3]
        [--splits TRAIN VAL TEST] [--workers 2] [--work DIR] [--json FILE]

Per level: `assynch.synth` writes `--clips` clips of `--seconds` (320x240, 25 fps, the level's
defaults), the real preprocessing job (`run_local`, in this process) turns them into shards with
the quickstart config (64 px frames, 4 windows of 4.8 s per stream sample, 2 s audio margin), and
`assynch.eval.onset_baseline` scores every stream sample from its stored frames and mel. Clips
are split into train/val/test by the job's own split (a hash of the clip name, fractions from the
config); the peer has nothing to train, so every split is a test of it and `all` pools them.

Reported with `assynch.eval.metrics` after the last window: ACC@1, ACC@1+-1 and EMD (seconds)
with the default logit scale (`DEFAULT_SCALE`), EMD with the scale that minimises the train
split's EMD (one calibrated number, not training), ACC@1 after the first window, ACC@1 with
`context="window"` (each window's own audio only, no margin), and a 95% bootstrap interval of
ACC@1 over clips for `all`, and, scale-free, the mean rank of the true lag's correlation among
the 21 lags (chance 10) with the t statistic of its excess over the other lags.

A diagnostic row, not a peer: the same correlation with the visual energy replaced by how much
the motion of the strongly coloured pixels (the synthetic objects) changes per frame. It uses
knowledge of the generator a user would not have; it is there to show that the contacts are
still in the 64 px frames at hard, i.e. that a model which localises the object can find them.

Chance: ACC@1 1/21 = 0.048, ACC@1+-1 about 0.14, EMD of a uniform prediction about 1.4 s
(printed per level for its labels).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from assynch.config import load_config
from assynch.eval.metrics import offset_metrics, streaming_metrics
from assynch.eval.onset_baseline import DEFAULT_SCALE, SplitCorrelations, correlate_split
from assynch.preprocess.job import run_local
from assynch.preprocess.plan import preprocess_config_hash
from assynch.shards.format import SPLITS
from assynch.synth.clips import SynthSpec, generate_clips

log = logging.getLogger("onset_baseline")

SCALES = (1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0, 30.0, 50.0, 80.0)


def object_motion_change(frames: np.ndarray) -> np.ndarray:
    """Diagnostic visual signal, not a fair peer: it knows that the synthetic objects are the
    only strongly coloured pixels. Per frame, how much the velocity of the centroid of those
    pixels changed (a contact or a reversal is a jump); NaN where no object is seen."""
    rgb = frames.astype(np.int16)
    saturated = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 100
    count = saturated.sum(axis=(1, 2))
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = (saturated * ys).sum(axis=(1, 2)) / count
        cx = (saturated * xs).sum(axis=(1, 2)) / count
    centre = np.where((count >= 2)[:, None], np.stack([cy, cx], axis=1), np.nan)
    velocity = np.diff(centre, axis=0)
    change = np.full(frames.shape[0], np.nan)
    change[1:-1] = np.linalg.norm(np.diff(velocity, axis=0), axis=1)
    return np.where(np.isnan(change) & (count > 0), 0.0, change)


def pooled(parts: list[SplitCorrelations]) -> SplitCorrelations:
    return SplitCorrelations(
        [i for p in parts for i in p.sample_ids],
        [v for p in parts for v in p.video_uids],
        np.concatenate([p.targets for p in parts]),
        np.concatenate([p.correlations for p in parts]),
    )


def final_metrics(result: SplitCorrelations, scale: float) -> dict[str, float]:
    return offset_metrics(result.probabilities(scale)[:, -1], result.targets)


def calibrated_scale(train: SplitCorrelations | None) -> float:
    if train is None or not len(train.targets):
        return DEFAULT_SCALE
    return min(SCALES, key=lambda s: final_metrics(train, s)["emd_sec"])


def bootstrap_acc1(result: SplitCorrelations, repeats: int = 2000, seed: int = 0) -> list[float]:
    """95% interval of ACC@1 resampling clips (a clip's samples stay together)."""
    correct = result.correlations.mean(axis=1).argmax(axis=1) == result.targets
    videos = sorted(set(result.video_uids))
    by_video = {v: correct[[u == v for u in result.video_uids]] for v in videos}
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(repeats):
        drawn = rng.choice(len(videos), size=len(videos))
        picked = np.concatenate([by_video[videos[i]] for i in drawn])
        values.append(float(picked.mean()))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def true_lag_evidence(result: SplitCorrelations) -> dict[str, float]:
    """How much the correlation at the true lag stands out, scale-free: its mean rank among the
    21 lags (0 = highest; chance 10) and the t statistic of (true lag - mean of the others)."""
    correlations = result.correlations.mean(axis=1)
    true = correlations[np.arange(len(result.targets)), result.targets]
    excess = true - (correlations.sum(axis=1) - true) / (correlations.shape[1] - 1)
    spread = excess.std(ddof=1) if len(excess) > 1 else float("nan")
    return {
        "mean_rank_of_true_lag": float((correlations > true[:, None]).sum(axis=1).mean()),
        "t_true_lag_excess": float(excess.mean() / spread * np.sqrt(len(excess))),
    }


def run_level(level: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    clips = work / level / "clips"
    started = time.perf_counter()
    paths = generate_clips(
        clips, count=args.clips, duration_sec=args.seconds, seed=args.seed,
        spec=SynthSpec(difficulty=level), workers=args.workers,
    )
    generated = time.perf_counter() - started
    overrides = [
        f"preprocess.input={clips}",
        f"preprocess.samples_per_video={args.samples_per_video}",
    ]
    if args.splits:
        train, val, test = args.splits
        overrides += [
            f"preprocess.splits.train={train}",
            f"preprocess.splits.val={val}",
            f"preprocess.splits.test={test}",
        ]
    config = load_config(args.config, overrides)
    # One shard folder per preprocessing config, so another --splits never meets old shards.
    shards = work / level / f"shards-{preprocess_config_hash(config)[:12]}"
    config = load_config(args.config, [*overrides, f"preprocess.output={shards}"])
    started = time.perf_counter()
    run_local(config, isolate=False)
    preprocessed = time.perf_counter() - started
    started = time.perf_counter()
    splits = {
        split: correlate_split(str(shards), split, config)
        for split in SPLITS
        if (shards / split).is_dir()
    }
    scored = time.perf_counter() - started
    window_only = {
        split: correlate_split(str(shards), split, config, context="window") for split in splits
    }
    window_only["all"] = pooled(list(window_only.values()))
    probe = {
        split: correlate_split(str(shards), split, config, visual=object_motion_change)
        for split in splits
    }
    probe["all"] = pooled(list(probe.values()))
    everything = pooled(list(splits.values()))
    scale = calibrated_scale(splits.get("train"))
    rows = {}
    for name, result in [*splits.items(), ("all", everything)]:
        metrics = final_metrics(result, DEFAULT_SCALE)
        first = streaming_metrics(result.probabilities(DEFAULT_SCALE), result.targets)[1]
        rows[name] = {
            "clips": len(set(result.video_uids)),
            "samples": len(result.targets),
            **metrics,
            "emd_sec_calibrated": final_metrics(result, scale)["emd_sec"],
            "acc1_first_window": first["acc1"],
            "acc1_window_audio_only": final_metrics(window_only[name], DEFAULT_SCALE)["acc1"],
            "object_probe": final_metrics(probe[name], DEFAULT_SCALE),
        }
    uniform = np.full((len(everything.targets), everything.correlations.shape[2]), 1.0)
    uniform /= uniform.shape[1]
    return {
        "level": level,
        "clips": len(paths),
        "seconds": args.seconds,
        "calibrated_scale": scale,
        "uniform_emd_sec": offset_metrics(uniform, everything.targets)["emd_sec"],
        "acc1_all_bootstrap95": bootstrap_acc1(everything),
        "true_lag_all": true_lag_evidence(everything),
        "splits": rows,
        "wall_sec": {"generate": generated, "preprocess": preprocessed, "score": scored},
    }


def print_table(results: list[dict[str, Any]]) -> None:
    header = (
        f"{'level':5} {'split':5} {'clips':>5} {'samples':>7} {'ACC@1':>6} {'ACC@1+-1':>8} "
        f"{'EMD s':>6} {'EMD s (cal.)':>12} {'ACC@1 1st win':>13} {'ACC@1 win audio':>15}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        for split, row in result["splits"].items():
            print(
                f"{result['level']:5} {split:5} {row['clips']:5d} {row['samples']:7d} "
                f"{row['acc1']:6.3f} {row['acc1_pm1']:8.3f} {row['emd_sec']:6.3f} "
                f"{row['emd_sec_calibrated']:12.3f} {row['acc1_first_window']:13.3f} "
                f"{row['acc1_window_audio_only']:15.3f}"
            )
        probe = result["splits"]["all"]["object_probe"]
        print(
            f"  {result['level']}: object-motion probe (diagnostic, knows objects are the coloured "
            f"pixels), all splits: ACC@1 {probe['acc1']:.3f}, ACC@1+-1 {probe['acc1_pm1']:.3f}, "
            f"EMD {probe['emd_sec']:.3f} s"
        )
        evidence = result["true_lag_all"]
        print(
            f"  {result['level']}: true lag, all splits: mean rank "
            f"{evidence['mean_rank_of_true_lag']:.2f} of 0-20 (chance 10), t of its excess "
            f"correlation {evidence['t_true_lag_excess']:.2f}"
        )
        low, high = result["acc1_all_bootstrap95"]
        print(
            f"  {result['level']}: ACC@1 (all) 95% bootstrap over clips [{low:.3f}, {high:.3f}]; "
            f"calibrated scale {result['calibrated_scale']:g} (default {DEFAULT_SCALE:g}); "
            f"uniform-prediction EMD {result['uniform_emd_sec']:.3f} s; wall s: "
            + ", ".join(f"{k} {v:.1f}" for k, v in result["wall_sec"].items())
        )
    print(f"chance: ACC@1 {1 / 21:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", nargs="+", default=["easy", "hard"], choices=["easy", "hard"])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--samples-per-video", type=int, default=3)
    parser.add_argument(
        "--splits", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=None,
        help="split fractions (default: the config's); the split is the job's hash of the clip "
        "name, so with 30 clips the config's 0.8/0.1/0.1 may leave one clip in val and test",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="keep clips and shards here")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = args.work or Path(tempfile.mkdtemp(prefix="onset_baseline_"))
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; work {work}"
    )
    results = [run_level(level, args, work) for level in args.levels]
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
