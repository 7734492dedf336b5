"""Builders for the bad inputs of issues 8 and 15: each makes one awkward or hostile file from scratch;
and (issue 15) the one check of a refusal's outcome: exit 2, one line naming the input, no traceback."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(width: int, height: int, rows: bytes | None = None, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG written by hand, so the header can claim any size and the depth can be 16 bits per
    channel (Pillow writes neither). `rows` are the unfiltered scanlines; None gives a file whose
    header promises `width` x `height` but whose data is a few bytes: a decompression bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    data = zlib.compress(rows if rows is not None else b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png16(values: np.ndarray) -> bytes:
    """A 16-bit PNG of `values` (H, W) gray or (H, W, 3) RGB uint16, big-endian as PNG stores it."""
    color_type = 0 if values.ndim == 2 else 2
    h, w = values.shape[:2]
    be = values.astype(">u2").reshape(h, -1).tobytes()
    stride = len(be) // h
    rows = b"".join(b"\x00" + be[r * stride : (r + 1) * stride] for r in range(h))  # filter 0 per row
    return raw_png(w, h, rows, bit_depth=16, color_type=color_type)


def truncated(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    """Noise in `fmt`, cut in half: the header reads fine, the pixels do not."""
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    return data[: len(data) // 2]


def quadrant_jpeg(orientation: int, size: tuple[int, int] = (64, 32)) -> bytes:
    """A JPEG stored with a red top-left quadrant on blue, tagged with EXIF `orientation`."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[...] = (0, 0, 255)
    arr[: h // 2, : w // 2] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(arr), "JPEG", exif=exif, quality=95)


def red_corner(arr: np.ndarray) -> str:
    """Which quadrant of a decoded image is red: 'top-left', 'top-right', 'bottom-left' or 'bottom-right'."""
    h, w = arr.shape[:2]
    quads = {
        "top-left": arr[: h // 2, : w // 2],
        "top-right": arr[: h // 2, w // 2 :],
        "bottom-left": arr[h // 2 :, : w // 2],
        "bottom-right": arr[h // 2 :, w // 2 :],
    }
    redness = {k: float(q[..., 0].mean()) - float(q[..., 2].mean()) for k, q in quads.items()}
    return max(redness, key=redness.get)


def animated(fmt: str, colours=((255, 0, 0), (0, 0, 255)), size=(6, 6)) -> bytes:
    frames = [Image.new("RGB", size, c) for c in colours]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], **extra)


def make_zip(
    path: Path,
    entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]],
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    """A zip of exactly these entries (names as given: nothing normalised, so hostile names survive)."""
    items = entries.items() if isinstance(entries, dict) else entries
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, payload in items:
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            zf.writestr(info, payload, compress_type=compression)
    return path


def snapshot(root: Path) -> set[str]:
    """Every path under `root` (files, folders and links), to prove nothing appeared where it should not."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# --- issue 15: the exact outcome of a refused input ----------------------------------------------------


@dataclass
class Outcome:
    """What one command did: its exit code and what it printed."""

    code: int
    out: str
    err: str

    def refusal(self) -> str:
        """The one line a refusal prints, argparse's usage lines (which name the command) left aside."""
        lines = [ln for ln in self.err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
        assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
        return lines[0]


def cli(argv: list[str], capsys: pytest.CaptureFixture) -> Outcome:
    """`python -m engine ARGV` in this process (an argparse refusal exits through SystemExit)."""
    from engine.cli.main import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


def refused(outcome: Outcome, *names: str) -> str:
    """Assert the issue-15 contract: exit 2, no traceback, exactly one line that names each of `names`."""
    assert "Traceback" not in outcome.err, outcome.err[-2000:]
    assert outcome.code == 2, (outcome.code, outcome.err[-2000:])
    line = outcome.refusal()
    assert "error" in line, line
    for name in names:
        assert name in line, (name, line)
    assert len(line) < 500, f"an error echoes at most an excerpt of a value: {len(line)} characters"
    return line


@pytest.fixture
def jail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Runs the test in an empty working folder and checks that nothing appeared there, nor anywhere under
    tmp_path outside the data, runs and cache folders and what the test itself built before `jail.seal()`."""

    class Jail:
        cwd = tmp_path / "cwd"
        before: set[str] | None = None

        def seal(self) -> None:
            self.before = outside(tmp_path)

    def outside(root: Path) -> set[str]:
        allowed = ("data", "runs", "cache")
        return {p for p in snapshot(root) if p.split("/")[0] not in allowed}

    j = Jail()
    j.cwd.mkdir()
    monkeypatch.chdir(j.cwd)
    yield j
    assert not any(j.cwd.iterdir()), f"written into the working folder: {sorted(snapshot(j.cwd))}"
    if j.before is not None:
        assert outside(tmp_path) == j.before, sorted(outside(tmp_path) ^ j.before)


def peak_rss_mb(
    argv: list[str], env: dict[str, str], timeout: float = 120
) -> tuple[subprocess.CompletedProcess, float]:
    """Run `argv` in a fresh process and return it with its peak resident memory in MB.

    A small wrapper process starts the command and reads `getrusage(RUSAGE_CHILDREN)` after it ends, so
    the figure is this command's own peak, not the largest child the test session ever had.
    """
    wrapper = (
        "import json, resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "print(json.dumps({'code': p.returncode, 'out': p.stdout[-20000:], 'err': p.stderr[-20000:],\n"
        "                  'kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, env=env, timeout=timeout
    )
    res = json.loads(done.stdout.strip().splitlines()[-1])
    return subprocess.CompletedProcess(argv, res["code"], res["out"], res["err"]), res["kb"] / 1024


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory, session_cache: Path):
    """One real one-epoch digits run (8 px, grayscale) for the issue-15 cases; copy it before damaging it."""
    from tests.pagetools import train_tiny

    return train_tiny(tmp_path_factory.mktemp("r2-runs"), "builtin:digits", 8, session_cache)
