"""Memory: a decoded dataset lives in a memory-mapped file, not in the app's heap; uploads are held once.

The figure that matters is RssAnon (private memory: heap, torch tensors), measured in a fresh process
with torch already imported. File-backed pages of the memmap count in RSS too, but they are the
kernel's page cache: shared between processes and dropped under pressure, never "held" by the app.

Measured once at full scale with the script below (100,000 PNG files, 64 px RGB, so a 1.23 GB array;
2-core shared machine, 2026-11): first open (decoding everything) RssAnon peak +532 MB, +87 MB after,
max RSS 2.2 GB; every later open +44 MB RssAnon after reading every image, max RSS 1.7 GB, of which
1.23 GB are the memmap's page-cache pages. The decode's peak is `thumbnails_batch` turning 4096 images
at a time into float32; it does not grow with the dataset, but it grows with the working size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT

N_IMAGES = 3000  # enough for the decode pool (POOL_MIN_FILES) and an array far above the slack below
SIZE = 64
MB = 1 << 20

MEASURE = r"""
import json, sys, threading, time


def anon() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


def main() -> None:
    import numpy as np
    import torch  # noqa: F401  (imported before the baseline: its own ~250 MB is not the dataset's)

    from engine.data import open_dataset

    base, peak, stop = anon(), [0], []

    def sample() -> None:
        while not stop:
            peak[0] = max(peak[0], anon())
            time.sleep(0.002)

    threading.Thread(target=sample, daemon=True).start()
    ds = open_dataset(sys.argv[1], image_size=int(sys.argv[2]))
    opened = anon()
    checksum = 0
    for s in range(0, len(ds.images), 512):  # every image read once, as an epoch or the stats would
        checksum += int(np.asarray(ds.images[s:s + 512]).sum(dtype=np.uint64))
    stop.append(1)
    print(json.dumps({"array": int(ds.images.nbytes), "memmap": isinstance(ds.images, np.memmap),
                      "peak": max(peak[0], anon()) - base, "opened": opened - base, "touched": anon() - base,
                      "checksum": checksum}))


if __name__ == "__main__":  # the decode pool spawns workers that import this file
    main()
"""


def measure(root: Path, cache: Path, tmp: Path) -> dict:
    script = tmp / "measure_memory.py"
    script.write_text(MEASURE)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LOUPE_CACHE_DIR": str(cache)}
    out = subprocess.run(
        [sys.executable, str(script), str(root), str(SIZE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("memds")
    for i in range(N_IMAGES):  # small files: the working size (64 px) decides the array, not the files
        cls = root / f"c{i % 3}"
        cls.mkdir(exist_ok=True)
        rng = np.random.default_rng(zlib.crc32(str(i).encode()))
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(cls / f"{i}.png")
    return root


@pytest.mark.slow
def test_a_decoded_dataset_is_memory_mapped_not_held_in_the_heap(folder: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    first = measure(folder, cache, tmp_path)  # decodes into the cache
    again = measure(folder, cache, tmp_path)  # what every later app session and training does
    array = N_IMAGES * SIZE * SIZE * 3
    assert first["array"] == again["array"] == array and first["memmap"] and again["memmap"]
    assert first["checksum"] == again["checksum"]
    print(
        f"\narray {array / MB:.1f} MB; first open (decode): peak +{first['peak'] / MB:.1f} MB, "
        f"after +{first['opened'] / MB:.1f} MB; reopen +{again['opened'] / MB:.1f} MB, "
        f"after reading every image +{again['touched'] / MB:.1f} MB (RssAnon)"
    )
    # reopening and reading every image adds almost nothing: the pixels stay in the page cache
    assert again["touched"] < array / 4 + 8 * MB
    # the decode keeps no heap copy of the array once it is done...
    assert first["opened"] < array / 4 + 24 * MB
    # ...and its peak is the duplicate check's float chunk (4096 images), not a function of the dataset:
    # 4096 x 64 x 64 x 3 float32 = 192 MB at most, against 1.2 GB for the array of 100k images
    assert first["peak"] < 4096 * SIZE * SIZE * 3 * 4 + array + 64 * MB


class CountingReader:
    """A file-like upload that records how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        import io

        self._buf, self.reads = io.BytesIO(data), []

    def read(self, n: int = -1) -> bytes:
        self.reads.append(n)
        return self._buf.read(n)

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._buf.seek(pos, whence)


def test_dataset_uploads_stream_to_disk_in_chunks(tmp_path: Path):
    import io
    import zipfile

    from engine.data.sources.archive import CHUNK, save_upload

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for i in range(4):  # noise does not compress: ~1.9 MB per image, several CHUNKs in all
            arr = np.random.default_rng(i).integers(0, 256, (800, 800, 3), dtype=np.uint8)
            png = io.BytesIO()
            Image.fromarray(arr).save(png, format="PNG", compress_level=0)
            z.writestr(f"ds/{'ab'[i % 2]}/{i}.png", png.getvalue())
    data = buf.getvalue()
    assert len(data) > 3 * CHUNK
    upload = CountingReader(data)
    root = save_upload("ds.zip", upload, dest_root=tmp_path)
    assert root.is_dir() and (tmp_path / "uploads" / "ds.zip").read_bytes() == data
    assert len(upload.reads) > 3 and all(0 < n <= CHUNK for n in upload.reads)  # never read() whole


def test_predict_uploads_share_streamlits_buffer():
    """Streamlit holds each uploaded file once; the Predict page passes that same buffer on, uncopied."""
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    from app.predict.load import uploads

    payload = bytes(range(256)) * 4096
    files = [
        UploadedFile(UploadedFileRec(file_id=str(i), name="a.png", type="image/png", data=payload), None)
        for i in range(2)
    ]
    items = uploads(files, None)
    assert [name for name, _ in items] == ["a.png", "a (2).png"]
    assert all(data is payload for _, data in items)  # the very same bytes object: no second copy
