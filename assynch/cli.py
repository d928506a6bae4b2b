"""The `assynch` command. Each subcommand is a thin wrapper around library code.

User mistakes (bad config, bad input file) end with one clear line on stderr and a non-zero exit,
never a traceback; `--debug` shows the traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from assynch.config import AssynchConfig, load_config
from assynch.errors import UserError

app = typer.Typer(
    name="assynch",
    help="Detect audio-visual synchronization offsets in long egocentric video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
log = logging.getLogger("assynch")

_state: dict[str, bool] = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see configs/).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one config field: section.field=value (repeatable)."),
]


def user_errors(function: F) -> F:
    """Turn a `UserError` (assynch/errors.py: bad config, file, URL, ...) into one line, exit 2."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except UserError as exc:
            if _state["debug"]:
                raise
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def config_from_options(config: Path | None, overrides: list[str] | None) -> AssynchConfig:
    return load_config(config, overrides or [])


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """assynch: audio-visual sync offset detection (AS-Synchformer)."""
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command("config")
@user_errors
def show_config(config: ConfigOption = None, set_: SetOption = None) -> None:
    """Validate a config (with overrides) and print it in full."""
    from assynch.config import dump_config

    typer.echo(dump_config(config_from_options(config, set_)))


# Subcommands are registered below, one block per command, each importing its module lazily so
# that `assynch --help` stays fast.


# --- inspect: decode one video the way the pipeline does and report what came out ------------


@app.command("inspect")
def inspect_video(
    video: Annotated[str, typer.Argument(help="A video file path or fsspec URL (s3://...).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Decode VIDEO fully (target fps, 16 kHz mono) and print its streams and timings."""
    user_errors(_inspect_video)(video, as_json, config, set_)


def _inspect_video(
    video: str, as_json: bool, config: Path | None, overrides: list[str] | None
) -> None:
    import json

    from rich.table import Table

    from assynch.media.decode import inspect_media

    cfg = config_from_options(config, overrides)
    report = inspect_media(
        video, time=cfg.time, video=cfg.video, storage_options=cfg.storage.fsspec_options()
    )
    values = report.as_dict()
    if as_json:
        typer.echo(json.dumps(values, indent=2))
        return
    table = Table(title=f"assynch inspect: {video}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in values.items():
        table.add_row(key, "-" if value is None else str(value))
    Console().print(table)


# --- synth: synthetic egocentric clips with known audio-visual events -------------------------


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the clips into.")],
    count: Annotated[int, typer.Option(help="Number of clips.")] = 8,
    duration: Annotated[float, typer.Option(help="Seconds per clip.")] = 30.0,
    seed: Annotated[int, typer.Option(help="Seed of the set; clip i uses a seed derived from it.")]
    = 0,
    width: Annotated[int, typer.Option(help="Frame width (even).")] = 320,
    height: Annotated[int, typer.Option(help="Frame height (even).")] = 240,
    fps: Annotated[float, typer.Option(help="Frames per second.")] = 25.0,
    sample_rate: Annotated[int, typer.Option(help="Audio sample rate (AAC).")] = 48000,
    difficulty: Annotated[
        str,
        typer.Option(
            help="easy: flashes and knocks on a slowly moving view; hard: contacts and "
            "reversals of small objects under head turns, shake and exposure steps."
        ),
    ] = "easy",
    event_interval: Annotated[
        float | None,
        typer.Option(help="Mean seconds between audio-visual events (easy 5.0, hard 7.0)."),
    ] = None,
    min_gap: Annotated[
        float | None,
        typer.Option(help="Smallest seconds between audio-visual events (easy 1.5, hard 2.5)."),
    ] = None,
    distractor_interval: Annotated[
        float | None,
        typer.Option(help="Mean seconds between distractors (easy 6.0, hard 3.5)."),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated audio-visual kinds: impact,appear,rhythm,bounce,reverse "
            "(easy: impact,appear,rhythm; hard: bounce,reverse)."
        ),
    ] = None,
    distractors: Annotated[
        bool, typer.Option(help="Add silent motion and off-screen sounds.")
    ] = True,
    ambient: Annotated[bool, typer.Option(help="Add drifting ambient noise.")] = True,
    camera_motion: Annotated[
        bool, typer.Option(help="Pan, shake and brightness drift.")
    ] = True,
    workers: Annotated[
        int | None, typer.Option(help="Parallel encoding processes (default: one per CPU).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Regenerate clips that already exist with the same settings.")
    ] = False,
) -> None:
    """Write synthetic egocentric clips (H.264 + AAC MP4) with a JSON of their events each."""
    user_errors(_synth)(
        out, count, duration, seed, width, height, fps, sample_rate, difficulty, event_interval,
        min_gap, distractor_interval, kinds, distractors, ambient, camera_motion, workers,
        overwrite,
    )


_SYNTH_OPTIONS = {
    "width": "--width", "height": "--height", "fps": "--fps", "sample_rate": "--sample-rate",
    "event_interval_sec": "--event-interval", "min_event_gap_sec": "--min-gap",
    "distractor_interval_sec": "--distractor-interval", "event_kinds": "--kinds",
    "difficulty": "--difficulty",
}


def _synth(
    out: Path, count: int, duration: float, seed: int, width: int, height: int, fps: float,
    sample_rate: int, difficulty: str, event_interval: float | None, min_gap: float | None,
    distractor_interval: float | None, kinds: str | None, distractors: bool, ambient: bool,
    camera_motion: bool, workers: int | None, overwrite: bool,
) -> None:
    import time

    from pydantic import ValidationError
    from rich.progress import Progress

    from assynch.synth.clips import (
        AUDIO_VISUAL_KINDS,
        SynthSpec,
        generate_clips,
        load_events,
        sidecar_path,
    )

    fields: dict[str, object] = {
        "difficulty": difficulty, "width": width, "height": height, "fps": fps,
        "sample_rate": sample_rate, "distractors": distractors, "ambient_noise": ambient,
        "camera_motion": camera_motion,
    }
    if kinds is not None:
        chosen_kinds = tuple(kind.strip() for kind in kinds.split(",") if kind.strip())
        unknown = [kind for kind in chosen_kinds if kind not in AUDIO_VISUAL_KINDS]
        if unknown or not chosen_kinds:
            raise UserError(
                f"--kinds {kinds!r}: unknown or missing kinds {unknown}; pass a comma-separated "
                f"subset of {','.join(AUDIO_VISUAL_KINDS)}"
            )
        fields["event_kinds"] = chosen_kinds
    # Options left out take the difficulty's defaults (SynthSpec fills them in).
    for name, value in (("event_interval_sec", event_interval), ("min_event_gap_sec", min_gap),
                        ("distractor_interval_sec", distractor_interval)):
        if value is not None:
            fields[name] = value
    try:
        spec = SynthSpec(**fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if error["loc"]:
                name = str(error["loc"][0])
                message = f"{_SYNTH_OPTIONS.get(name, name)}: {message}"
            problems.append(message)
        raise UserError("invalid synth options: " + "; ".join(problems)) from None
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers} must be at least 1")

    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("synthesising clips", total=count)
        paths = generate_clips(
            out, count=count, duration_sec=duration, seed=seed, spec=spec, workers=workers,
            skip_existing=not overwrite, progress=lambda _path: progress.advance(task),
        )
    elapsed = time.perf_counter() - started
    events = [load_events(sidecar_path(path)) for path in paths]
    audio_visual = sum(len(clip.audio_visual_events()) for clip in events)
    distractor_count = sum(len(clip.distractor_events()) for clip in events)
    typer.echo(
        f"{len(paths)} clips in {out} ({spec.difficulty}, {width}x{height}, {fps:g} fps, "
        f"{duration:g} s each): "
        f"{audio_visual} audio-visual events, {distractor_count} distractors, {elapsed:.1f} s"
    )


# --- preprocess: videos -> Parquet shards (pipelines/preprocess.py on Ray Data) ---------------
@app.command(
    "preprocess",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def preprocess(ctx: typer.Context) -> None:
    """Decode videos into Parquet shards of stream samples (Ray Data); `--help` lists the flags.

    The arguments go unchanged to `python -m pipelines.preprocess`, the module that
    `ray job submit` runs, so both accept exactly the same flags.
    """
    from assynch.jobs import run_job_module

    code = run_job_module("preprocess", ctx.args)
    if code != 0:
        raise typer.Exit(code=code)


# --- pipeline: the whole graph (pipelines/dag.py, Dagster) ------------------------------------
pipeline_app = typer.Typer(help="The pipeline as a Dagster graph: clips -> shards -> model -> "
                           "evaluation.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")


@pipeline_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def pipeline_run(ctx: typer.Context) -> None:
    """Materialise the whole graph in-process on a local Ray and MLflow; `--help` lists flags.

    The arguments go unchanged to `python -m pipelines.dag run`.
    """
    from assynch.jobs import run_job_module

    code = run_job_module("dag", ["run", *ctx.args])
    if code != 0:
        raise typer.Exit(code=code)
# --- evaluate: a model on a shard split (pipelines/evaluate.py on Ray Data) -------------------
@app.command(
    "evaluate",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def evaluate(ctx: typer.Context) -> None:
    """Evaluate a model on a shard split, log it to MLflow, optionally promote it; `--help`
    lists the flags.

    The arguments go unchanged to `python -m pipelines.evaluate`, the module that
    `ray job submit` runs, so both accept exactly the same flags.
    """
    from assynch.jobs import run_job_module

    code = run_job_module("evaluate", ctx.args)
    if code != 0:
        raise typer.Exit(code=code)


# --- compare: runs side by side (MLflow) ------------------------------------------------------


@app.command("compare")
def compare(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Compare every run of it.")
    ] = None,
    run: Annotated[
        list[str] | None, typer.Option("--run", help="A run id (repeatable).")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="A registered model URI: its latest evaluation run "
                     "(repeatable)."),
    ] = None,
    sort: Annotated[str, typer.Option(help="Metric to sort by (best first).")] = "streaming/acc1",
    ascending: Annotated[
        bool | None,
        typer.Option("--ascending/--descending",
                     help="Sort order (default: ascending for EMD/loss-like metrics)."),
    ] = None,
    curve: Annotated[
        str, typer.Option(help="Metric whose history (per step) is plotted per run.")
    ] = "streaming/curve/acc1",
    filter_: Annotated[
        str, typer.Option("--filter", help="MLflow search filter for --experiment, e.g. "
                          "\"tags.`assynch.run_type` = 'evaluation'\".")
    ] = "",
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for comparison.md and the plot.")
    ] = Path("reports/compare"),
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: the config's).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Runs side by side: differing params and metrics sorted by one metric (terminal table and
    markdown), and one PNG of a metric's curve per run."""
    user_errors(_compare)(experiment, run or [], model or [], sort, ascending, curve, filter_,
                          output, tracking_uri, config, set_)


def _compare(
    experiment: str | None, runs: list[str], models: list[str], sort: str,
    ascending: bool | None, curve: str, filter_: str, output: Path, tracking_uri: str | None,
    config: Path | None, overrides: list[str] | None,
) -> None:
    from rich.table import Table

    from assynch.eval.compare import comparison_table, plot_curves, plot_name, render_markdown
    from assynch.tracking.evaluation import fetch_runs, metric_history, tracking_uri_for

    if experiment is None and not runs and not models:
        raise UserError("compare needs --experiment NAME, --run ID or --model URI")
    uri = tracking_uri_for(config_from_options(config, overrides), tracking_uri)
    records = fetch_runs(uri, experiment=experiment, run_ids=tuple(runs),
                         model_uris=tuple(models), filter_string=filter_)
    if not records:
        raise UserError(f"no runs to compare (experiment {experiment!r}, filter {filter_!r})")
    histories = {f"{r.name} ({r.run_id[:8]})": metric_history(uri, r.run_id, curve)
                 for r in records}
    output.mkdir(parents=True, exist_ok=True)
    plot = plot_curves(histories, curve, output / plot_name(curve))
    source = f"experiment {experiment}" if experiment else ""
    (output / "comparison.md").write_text(
        render_markdown(records, sort, ascending, plot=plot.name, source=source)
    )
    header, rows = comparison_table(records, sort, ascending)
    table = Table(title=f"{len(records)} runs, best first by {sort}")
    for column in header:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    typer.echo(f"markdown: {output / 'comparison.md'}\nplot: {plot}")
# --- train: shards -> a fine-tuned model (pipelines/train.py on Ray Train) ---------------------
@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def train(ctx: typer.Context) -> None:
    """Fine-tune AS-Synchformer on shards with Ray Train (DDP); `--help` lists the flags.

    The arguments go unchanged to `python -m pipelines.train`, the module that `ray job submit`
    runs, so both accept exactly the same flags.
    """
    from assynch.jobs import run_job_module

    code = run_job_module("train", ctx.args)
    if code != 0:
        raise typer.Exit(code=code)


# --- detect: the sync of whole videos, with a timeline, drift segments and a fixed copy -------


@app.command("detect")
def detect(
    videos: Annotated[
        list[str],
        typer.Argument(help="Video files, folders of videos, or s3:// URLs of videos."),
    ],
    model: Annotated[
        str | None,
        typer.Option("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., or a "
                     "checkpoint path. Default: tracking.registered_model @champion, else "
                     "@candidate."),
    ] = None,
    checkpoint: Annotated[
        str | None,
        typer.Option("--checkpoint", help="A local assynch or Synchformer-format checkpoint."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document per video on stdout (JSON lines).")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="PNG of offset probability over time (a folder for several "
                     "videos)."),
    ] = None,
    fix: Annotated[
        Path | None,
        typer.Option("--fix", help="Write a copy with the audio moved into sync (a folder for "
                     "several videos)."),
    ] = None,
    shift: Annotated[
        float | None,
        typer.Option("--shift", help="With --fix: delay the audio by SEC (negative: advance) "
                     "instead of the detected offset."),
    ] = None,
    context: Annotated[
        str,
        typer.Option("--context", help="Windows each prediction sees: 'trained' (the model's "
                     "windows per stream sample), a number, or 'all' (one state through the "
                     "whole video)."),
    ] = "trained",
    config: ConfigOption = None,
    set_: SetOption = None,
) -> None:
    """Check the audio-visual sync of whole videos (exit 0 in sync, 3 out of sync, 4 undecided,
    2 error) and optionally plot the timeline and write a corrected copy."""
    code = user_errors(_detect)(
        videos, model, checkpoint, as_json, plot, fix, shift, context, config, set_
    )
    raise typer.Exit(code=code)


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v", ".webm", ".avi", ".ts", ".mts", ".flv")


def _expand_videos(arguments: list[str]) -> list[str]:
    videos: list[str] = []
    for argument in arguments:
        path = Path(argument)
        if "://" not in argument and path.is_dir():
            found = sorted(
                str(p) for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise UserError(f"{argument}: the folder holds no video "
                                f"({', '.join(VIDEO_SUFFIXES)})")
            videos.extend(found)
        else:
            videos.append(argument)
    return videos


def _parse_context(text: str) -> int | None | str:
    if text in ("trained", "all"):
        return None if text == "all" else "trained"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UserError(f"--context {text}: pass 'trained', 'all' or a number of windows >= 1")
    return value


def _output_for(option: Path, video: str, many: bool, suffix: str) -> Path:
    if not many:
        return option
    stem = Path(video.rstrip("/").split("/")[-1]).stem
    return option / f"{stem}{suffix}"


def _detect(
    videos: list[str], model_uri: str | None, checkpoint: str | None, as_json: bool,
    plot: Path | None, fix: Path | None, shift: float | None, context_text: str,
    config: Path | None, overrides: list[str] | None,
) -> int:
    import json

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from assynch.detect.loading import resolve_model
    from assynch.detect.report import batch_exit_code, error_document

    context = _parse_context(context_text)
    if shift is not None and fix is None:
        raise UserError("--shift needs --fix OUT (it sets the shift of the corrected copy)")
    sources = _expand_videos(videos)
    many = len(sources) > 1
    cfg = config_from_options(config, overrides)
    loaded = resolve_model(cfg, model_uri=model_uri, checkpoint=checkpoint)
    storage = cfg.storage.fsspec_options()
    outcomes: list[tuple[str, Any]] = []  # (source, report or error message)
    codes = []
    for source in sources:
        try:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[done]}"),
                TimeRemainingColumn(), console=console, transient=True,
            ) as progress:
                task = progress.add_task(f"detect {source}", total=None, done="")

                def on_progress(done: float, total: float | None, task: Any = task,
                                progress: Any = progress) -> None:
                    progress.update(task, completed=done, total=total,
                                    done=f"{done:.0f}/{total or 0:.0f} s")

                report = _detect_one(
                    source, loaded, context, storage, on_progress,
                    None if plot is None else _output_for(plot, source, many, ".png"),
                    None if fix is None else _output_for(
                        fix, source, many, f".fixed{Path(source).suffix or '.mp4'}"),
                    shift,
                )
        except UserError as exc:
            if _state["debug"]:
                raise
            codes.append(2)
            outcomes.append((source, str(exc)))
            if as_json:
                typer.echo(json.dumps(error_document(source, str(exc))))
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            continue
        codes.append(report.exit_code)
        outcomes.append((source, report))
        if as_json:
            typer.echo(json.dumps(report.as_dict()))
        elif not many:
            _print_report(report)
    if many and not as_json:
        _print_batch(outcomes)
    return batch_exit_code(codes)


def _detect_one(
    source: str, loaded: Any, context: int | None | str, storage: dict[str, Any],
    on_progress: Callable[[float, float | None], None], plot: Path | None, fix: Path | None,
    shift: float | None,
) -> Any:
    from assynch.detect.fix import Shift, shifts_from_segments, write_fixed_copy
    from assynch.detect.plot import plot_report
    from assynch.detect.run import detect_video

    report = detect_video(source, loaded, context=context, storage_options=storage,
                          on_progress=on_progress)
    if plot is not None:
        plot_report(report, plot)
    if fix is not None:
        if "://" in source:
            raise UserError(f"{source}: --fix needs a local file; download it first")
        analysis = report.analysis
        if shift is not None:
            shifts = [Shift(0.0, report.duration_sec, shift)]
        elif analysis.verdict == "undecided":
            raise UserError(
                f"{source}: the offset is undecided ({analysis.reason}); not writing --fix "
                f"{fix}. Pass --shift SEC to force a shift"
            )
        elif analysis.verdict == "drifting":
            shifts = shifts_from_segments(analysis.segments, report.duration_sec)
        else:
            shifts = [Shift(0.0, report.duration_sec, float(analysis.offset_sec or 0.0))]
        report.fix = write_fixed_copy(source, fix, shifts)
    return report


def _print_report(report: Any) -> None:
    from rich.table import Table

    out = Console()
    analysis = report.analysis
    offset = "-" if analysis.offset_sec is None else f"{analysis.offset_sec:+.1f} s"
    out.print(f"[bold]{report.source}[/]: [bold]{analysis.verdict}[/] — offset {offset} "
              f"(+ = audio early), confidence {analysis.confidence:.2f}; {analysis.reason}",
              highlight=False)
    out.print(f"{report.results.count} windows ({analysis.evidence_windows} with sound and "
              f"motion) over {report.duration_sec:.1f} s; {report.model}; "
              f"{report.results.wall_sec:.1f} s wall, "
              f"{report.duration_sec / max(report.results.wall_sec, 1e-9):.1f}x real time",
              highlight=False)
    segments = Table(title="segments of constant offset")
    for column in ("start (s)", "end (s)", "offset (s)", "confidence", "evidence windows"):
        segments.add_column(column, justify="right")
    for s in analysis.segments:
        segments.add_row(f"{s.start_sec:.1f}", f"{s.end_sec:.1f}", f"{s.offset_sec:+.1f}",
                         f"{s.confidence:.2f}", str(s.evidence_windows))
    out.print(segments)
    timeline = Table(title="timeline (one row per window)")
    for column in ("window", "start (s)", "offset (s)", "confidence", "audio dB", "motion",
                   "evidence"):
        timeline.add_column(column, justify="right")
    for row in report.timeline():
        timeline.add_row(str(row["index"]), f"{row['start_sec']:.1f}", f"{row['offset_sec']:+.1f}",
                         f"{row['confidence']:.2f}", f"{row['audio_db']:.0f}",
                         f"{row['motion']:.1f}", "yes" if row["evidence"] else "no")
    out.print(timeline)
    if report.fix is not None:
        shifts = ", ".join(f"{s['shift_sec']:+.2f} s from {s['start_sec']:.1f} s"
                           for s in report.fix["shifts"])
        out.print(f"wrote {report.fix['path']} (audio delayed by {shifts}; video copied)",
                  highlight=False)


def _print_batch(outcomes: list[tuple[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"assynch detect: {len(outcomes)} videos")
    for column in ("video", "verdict", "offset (s)", "confidence", "segments", "duration (s)"):
        table.add_column(column)
    for source, report in outcomes:
        if isinstance(report, str):
            table.add_row(source, "[red]error[/] (exit 2, reason above)", "", "", "", "")
            continue
        analysis = report.analysis
        table.add_row(
            source, analysis.verdict,
            "-" if analysis.offset_sec is None else f"{analysis.offset_sec:+.1f}",
            f"{analysis.confidence:.2f}", str(len(analysis.segments)),
            f"{report.duration_sec:.1f}",
        )
    Console().print(table)
