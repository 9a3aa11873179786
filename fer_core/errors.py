"""User-facing errors.

Every problem a user can cause (bad config, bad data, unknown name) is raised as a
``FerError`` with a one-line message naming the file/key/value and what is allowed.
The CLI turns it into ``error: <message>`` on stderr and exit code 2, no traceback.
"""

from __future__ import annotations


class FerError(Exception):
    """Base class of errors caused by user input; the message is one line."""


class ConfigError(FerError):
    """A config key or value is unknown or out of range."""


class DataError(FerError):
    """A data source is missing, malformed or unusable (corrupt image, empty class...)."""


class ModelFileError(FerError):
    """A model, checkpoint, teacher or training-state file is unreadable, or refused because loading it
    would need arbitrary unpickling (``fer_core.checkpoint``)."""


class LaunchInterrupted(Exception):
    """SIGINT or SIGTERM stopped a launch after its finished trials were stored. Not a FerError: the CLI
    prints the one-line message and exits 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of an exception's message, for a one-line error, warning or stored reason;
    ``default`` (else the exception's type name) when the message is empty."""
    text = str(err).strip()
    if text:
        return text.splitlines()[0]
    return type(err).__name__ if default is None else default
