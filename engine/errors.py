"""Errors a user can act on.

A `LoupeError` carries one sentence for a person: what went wrong, which file or field, and what to
do. The CLI prints it without a traceback and exits non-zero; the app shows it in an error box.
Anything else that escapes is a bug in Loupe and keeps its traceback.
"""


class LoupeError(Exception):
    """Base class for problems caused by input, configuration or the environment."""


class DatasetError(LoupeError):
    """A dataset spec, file or label table that cannot be used as given."""


class ArchiveError(DatasetError):
    """An uploaded or named archive that is unsafe or unreadable."""
