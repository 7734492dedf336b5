"""Errors a user can act on.

A `LoupeError` carries one sentence for a person: what went wrong, which file or field, and what to
do. The CLI prints it without a traceback and exits non-zero; the app shows it in an error box.
Anything else that escapes is a bug in Loupe and keeps its traceback.

Errors that several modules raise or catch live here, at the bottom of the import graph, so catching
one never means importing the module that raises it, and sibling modules (the model factory, the
classifier, the weights loader) share them without importing each other. An error that one module
owns stays beside it (`RunError` in `engine.runs.folder`, `ExplainError`, ...).
"""


class LoupeError(Exception):
    """Base class for problems caused by input, configuration or the environment."""


class DatasetError(LoupeError):
    """A dataset spec, file or label table that cannot be used as given."""


class ArchiveError(DatasetError):
    """An uploaded or named archive that is unsafe or unreadable."""


class ModelError(LoupeError):
    """A model name, option or weights file that cannot be used."""


class PretrainedUnavailable(ModelError):
    """Pretrained weights were asked for but none can be found on this machine."""


class WeightsError(ModelError):
    """A weights file or package that is unreadable or does not fit the architecture."""


class EnvError(LoupeError):
    """A LOUPE_* environment variable set to a value Loupe cannot use."""


#: how many characters of an outside value an error message echoes
EXCERPT_CHARS = 60


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """`repr`-like text of `value` cut to `limit` characters, for echoing outside input in an error.

    Why one helper: a message must name the bad value, but a value can be a megabyte of text (an
    expanded YAML alias, a CSV cell, an environment variable); every error cuts it here, the same way.
    Control characters (a NUL byte, a newline) are escaped so the message stays one line.
    """
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"'{text}'" if isinstance(value, str) else text
