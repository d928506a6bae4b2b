"""`make quickstart`: the main job on the embedded default (configs/quickstart.yaml).

Each step is a function taking the config and returning nothing; they run in order and each
one's output is what the next one reads, so the quickstart exercises the real data flow.
"""

from __future__ import annotations

import argparse
import logging
import time as clock
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from assynch.config import AssynchConfig, load_config

log = logging.getLogger(__name__)
console = Console()

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
CLIP_COUNT = 10  # with configs/quickstart.yaml's split fractions: 8 train, 1 val, 1 test
CLIP_SECONDS = 40.0
CLIP_SEED = 0


def clips_folder(config: AssynchConfig) -> Path:
    return Path(config.preprocess.input)


def step_synthesise(config: AssynchConfig) -> None:
    """Write the synthetic egocentric clips the rest of the quickstart reads."""
    from assynch.synth.clips import SynthSpec, generate_clips

    spec = SynthSpec(fps=config.time.fps)
    paths = generate_clips(
        clips_folder(config), count=CLIP_COUNT, duration_sec=CLIP_SECONDS, seed=CLIP_SEED, spec=spec
    )
    console.print(f"{len(paths)} clips of {CLIP_SECONDS:g} s in {clips_folder(config)}")


def step_decode_into_windows(config: AssynchConfig) -> None:
    """Decode one clip the way the pipeline will and cut it into model-ready stream samples."""
    from assynch.media.decode import decode_all
    from assynch.media.features import normalised_log_mel
    from assynch.samples.model_inputs import stream_sample_to_model_inputs
    from assynch.samples.plan import cut_stream_sample, plan_stream_samples

    clip = sorted(clips_folder(config).glob("*.mp4"))[0]
    media = decode_all(str(clip), time=config.time, video=config.video)
    duration = len(media.frames) / config.time.fps
    margin = config.preprocess.audio_margin_sec
    plans = plan_stream_samples(
        clip.stem, duration, time=config.time, samples=config.preprocess.samples_per_video,
        seed=config.preprocess.seed, audio_margin_sec=margin,
    )
    table = Table(title=f"{clip.name}: {len(media.frames)} frames, {duration:.1f} s decoded")
    for column in ("sample", "start s", "offset s", "video input", "audio input"):
        table.add_column(column)
    for plan in plans:
        frames, audio = cut_stream_sample(
            media.frames, media.audio, plan, time=config.time, audio_margin_sec=margin
        )
        mel = normalised_log_mel(audio, config.audio, config.time.sample_rate)
        video_input, audio_input = stream_sample_to_model_inputs(
            frames, mel, time=config.time, video=config.video, audio=config.audio,
            audio_margin_sec=margin, stored_offset_sec=plan.offset_sec,
        )
        table.add_row(
            plan.sample_id, f"{plan.start_sec:.2f}", f"{plan.offset_sec:+.1f}",
            str(tuple(video_input.shape)), str(tuple(audio_input.shape)),
        )
    console.print(table)


def step_preprocess(config: AssynchConfig) -> None:
    """Run the preprocessing job (pipelines/preprocess.py) on a local Ray: clips -> shards.

    It runs as `python -m pipelines.preprocess`, the module `ray job submit` runs, because the
    library never imports the Ray pipelines. A rerun resumes or reports the finished output.
    """
    import tempfile

    from assynch.config import dump_config
    from assynch.jobs import run_job_module

    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "quickstart.yaml"
        config_path.write_text(dump_config(config))
        code = run_job_module("preprocess", ["--config", str(config_path)])
    if code != 0:
        raise SystemExit(f"preprocessing failed (exit code {code}); see the messages above")


def step_train(config: AssynchConfig) -> None:
    """Train the tiny AS-Synchformer on the shards with 2 Ray Train workers on a local Ray
    (`python -m pipelines.train`, the module `ray job submit` runs); rank 0 logs to the embedded
    MLflow (SQLite under data/quickstart) and registers the best model."""
    import tempfile
    import time

    from assynch.config import dump_config
    from assynch.jobs import run_job_module

    extra = ["--set", f"train.run_name=quickstart-{time.strftime('%Y%m%d-%H%M%S')}"]
    with tempfile.TemporaryDirectory() as folder:
        config_path = Path(folder) / "quickstart.yaml"
        config_path.write_text(dump_config(config))
        code = run_job_module("train", ["--config", str(config_path), *extra])
    if code != 0:
        raise SystemExit(f"training failed (exit code {code}); see the messages above")



def mlflow_ui_command(tracking_uri: str) -> str:
    """What to run (or open) to see the quickstart's runs and registry."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"


def evaluation_table(report: dict[str, Any]) -> Table:
    """Overall ACC@1, ACC@1±1 and EMD per mode with their bootstrap intervals."""
    data = report["data"]
    table = Table(title=f"{report['model']['uri']} on {data['split']} ({data['samples']} stream "
                        f"samples, {data['videos']} videos; 95% bootstrap over videos)")
    scored = {"streaming": "end of stream", "snapshot": "each window alone"}
    for column in ("mode", "scored", "ACC@1", "ACC@1±1", "EMD (s)"):
        table.add_column(column)
    for mode, summary in report["modes"].items():
        overall = summary["overall"]
        cells = [
            f"{overall[n]['value']:.3f} [{overall[n]['ci_low']:.3f}, {overall[n]['ci_high']:.3f}]"
            for n in ("acc1", "acc1_pm1", "emd_sec")
        ]
        table.add_row(mode, scored.get(mode, mode), *cells)
    return table


def step_evaluate(config: AssynchConfig) -> None:
    """Evaluate the model the quickstart trained (`eval.model`, the registered candidate) on the
    test split with the evaluation job, promote it to champion by the rule, and print the
    metrics and the command that opens the MLflow UI.

    Runs `python -m pipelines.evaluate --promote` on a local Ray, like `assynch evaluate`.
    """
    import json
    import tempfile

    from assynch.config import dump_config
    from assynch.jobs import run_job_module
    from assynch.tracking.evaluation import tracking_uri_for

    tracking_uri = tracking_uri_for(config)
    folder = Path(config.eval.output) / "quickstart"
    with tempfile.TemporaryDirectory() as temporary:
        config_path = Path(temporary) / "quickstart.yaml"
        config_path.write_text(dump_config(config))
        code = run_job_module("evaluate", [
            "--config", str(config_path), "--split", "test", "--promote",
            "--tracking-uri", tracking_uri, "--output", str(folder),
        ])
    if code != 0:
        raise SystemExit(f"evaluation failed (exit code {code}); see the messages above")
    report = json.loads((folder / "report.json").read_text())
    console.print(evaluation_table(report))
    promotion = report.get("promotion") or {}
    verdict = "promoted to champion" if promotion.get("promote") else "not promoted"
    console.print(f"{report['model']['uri']}: {verdict} ({promotion.get('reason', '-')})")
    console.print(f"report: {folder / 'report.md'}")
    console.print(f"MLflow UI: [bold]{mlflow_ui_command(tracking_uri)}[/]")


STEPS: list[tuple[str, Callable[[AssynchConfig], None]]] = [
    ("synthesise clips", step_synthesise),
    ("decode into stream samples", step_decode_into_windows),
    ("preprocess into shards (Ray Data)", step_preprocess),
    ("train the tiny model (Ray Train, 2 workers)", step_train),
    ("evaluate and promote (Ray Data, MLflow)", step_evaluate),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config, args.overrides)
    for number, (title, step) in enumerate(STEPS, start=1):
        console.rule(f"[bold]{number}/{len(STEPS)} {title}")
        started = clock.perf_counter()
        step(config)
        console.print(f"[dim]{title}: {clock.perf_counter() - started:.1f} s[/]")
    console.rule("[bold green]quickstart finished")


if __name__ == "__main__":
    main()
