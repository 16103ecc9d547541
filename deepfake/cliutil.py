"""What every `deepfake` command shares: argument errors as one line a user can act on, never a usage dump."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """A mistake in the command line; the command prints it as one line and exits with status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser that raises `UsageError` instead of printing the usage and exiting."""

    def error(self, message: str) -> None:
        raise UsageError(message)
