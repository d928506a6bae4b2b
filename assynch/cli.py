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
