"""The one error hierarchy of assynch.

Every error the project raises on purpose derives from `AssynchError`. A `UserError` is caused by
something the user gave (a config, a file, a URL, an output folder): its message names the input,
what is wrong with it and what to do, and every entry point prints it as one line (exit code 2)
instead of a traceback. Other `AssynchError`s are failures of a run as a whole.
"""

from __future__ import annotations


class AssynchError(Exception):
    """Base of every error assynch raises on purpose."""


class UserError(AssynchError):
    """Bad input from the user: printed as one line naming the input and the fix, exit code 2."""
