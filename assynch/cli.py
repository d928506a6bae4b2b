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

from assynch.config import AssynchConfig, ConfigError, load_config

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


class UserError(Exception):
    """An error caused by the user's input; printed as one line without a traceback."""


def user_errors(*error_types: type[BaseException]) -> Callable[[F], F]:
    """Turn the given exception types (and ConfigError/UserError) into one line and exit 2."""

    handled = (ConfigError, UserError, *error_types)

    def decorate(function: F) -> F:
        @wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except handled as exc:
                if _state["debug"]:
                    raise
                console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(code=2) from None

        return wrapper  # type: ignore[return-value]

    return decorate


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
@user_errors()
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
    from assynch.data.decode import DecodeError

    user_errors(DecodeError)(_inspect_video)(video, as_json, config, set_)


def _inspect_video(
    video: str, as_json: bool, config: Path | None, overrides: list[str] | None
) -> None:
    import json

    from rich.table import Table

    from assynch.data.decode import inspect_media

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
