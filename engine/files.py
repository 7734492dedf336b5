"""Opening files that come from outside: regular files only, never more bytes than a cap.

Why one place: a dataset folder can hold a named pipe or a `.png` symlink to `/dev/zero`; opening the
first blocks forever and reading the second never ends. Every outside file (an image, a label table, a
`.npz`) is opened here: without blocking (`O_NONBLOCK`, so a pipe opens at once), then checked with
`fstat` on the open descriptor (so a symlink is resolved and the very file read is the one checked),
and read only up to its cap. A `.npz` is a zip: its members are checked against the same kind of size
and ratio caps as uploaded archives before numpy inflates one.

A shared basic beside `env.py`: any stage may open an outside file, so this imports only errors and env.
"""

from __future__ import annotations

import os
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.env import env_int
from engine.errors import LoupeError

#: uncompressed bytes per `.npz` member (env LOUPE_MAX_NPZ_BYTES): numpy inflates a member whole
DEFAULT_MAX_NPZ_BYTES = 4 * 1024**3
#: uncompressed:compressed per `.npz` member above NPZ_RATIO_MIN_BYTES (env LOUPE_MAX_NPZ_RATIO), as for zips
DEFAULT_MAX_NPZ_RATIO = 200
NPZ_RATIO_MIN_BYTES = 1024**2


class FileRefused(LoupeError):
    """An outside file that is not a regular file, is over its byte cap, or is an unsafe `.npz`."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def open_regular(path: str | Path, max_bytes: int, cap_name: str) -> BinaryIO:
    """`path` opened for reading if it is (or links to) a regular file of at most `max_bytes` bytes.

    Raises `FileRefused` naming the file and what it is (a pipe, a device, too large: size and cap,
    and `cap_name`, the env variable that raises the cap); `OSError` for a missing or unreadable file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        name = Path(path).name
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"'{name}' is {_kind(st.st_mode)}, not a regular file; only regular files are read")
        if st.st_size > max_bytes:
            raise FileRefused(
                f"'{name}' is {st.st_size:,} bytes, over the cap of {max_bytes:,} bytes per file ({cap_name})"
            )
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_regular(path: str | Path, max_bytes: int, cap_name: str) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (see `open_regular`); a file that grows while
    read is cut off at the cap and refused, never read on."""
    with open_regular(path, max_bytes, cap_name) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileRefused(f"'{Path(path).name}' grew past the cap of {max_bytes:,} bytes while read ({cap_name})")
    return data


def npz_caps() -> tuple[int, int]:
    """(bytes per member, ratio per member) for `.npz` files, with their env overrides."""
    return env_int("LOUPE_MAX_NPZ_BYTES", DEFAULT_MAX_NPZ_BYTES), env_int("LOUPE_MAX_NPZ_RATIO", DEFAULT_MAX_NPZ_RATIO)


def check_npz_members(f: BinaryIO, name: str) -> None:
    """Refuse a `.npz` whose members would inflate past the caps, reading only the zip directory."""
    max_bytes, max_ratio = npz_caps()
    with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            if info.file_size > max_bytes:
                raise FileRefused(
                    f"'{name}' member '{info.filename[:60]}' inflates to {info.file_size:,} bytes, over the cap of "
                    f"{max_bytes:,} (LOUPE_MAX_NPZ_BYTES)"
                )
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > NPZ_RATIO_MIN_BYTES and ratio > max_ratio:
                raise FileRefused(
                    f"'{name}' member '{info.filename[:60]}' inflates {ratio:,.0f} times ({info.compress_size:,} to "
                    f"{info.file_size:,} bytes), over the ratio cap of {max_ratio} (LOUPE_MAX_NPZ_RATIO)"
                )
    f.seek(0)


@contextmanager
def open_npz(path: str | Path) -> Iterator[np.lib.npyio.NpzFile]:
    """`np.load` of a regular `.npz` file whose members pass the caps, without pickles.

    Raises `FileRefused` for what the caps refuse, and lets numpy's and zipfile's own errors (a damaged
    or non-zip file) through for the caller to word, since only the caller knows what the file is for.
    """
    max_bytes, _ = npz_caps()
    with open_regular(path, max_bytes, "LOUPE_MAX_NPZ_BYTES") as f:
        check_npz_members(f, Path(path).name)
        with np.load(f, allow_pickle=False) as z:
            yield z
