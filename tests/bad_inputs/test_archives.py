"""Hostile and messy zip archives: refused with a sentence naming the archive and the entry, and
nothing ever written outside the extraction folder; messy-but-honest ones open as datasets."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from engine.data import open_dataset, resolve_source
from engine.data.sources.archive import MARKER, extract_zip, save_upload
from engine.errors import ArchiveError
from tests.bad_inputs.conftest import encode, make_zip, snapshot


@pytest.fixture
def ddir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("LOUPE_MAX_UNZIPPED_BYTES", "LOUPE_MAX_ZIP_FILES"):
        monkeypatch.delenv(var, raising=False)
    return Path(os.environ["LOUPE_DATA_DIR"])


def _png(value: int, seed: int = 0) -> bytes:
    return encode(Image.new("RGB", (8, 8), (value, seed, 255 - value)), "PNG")


GOOD = {
    "pets/cat/1.png": _png(10),
    "pets/cat/2.png": _png(20),
    "pets/dog/1.png": _png(200),
    "pets/dog/2.png": _png(220),
}


def _refused(tmp_path: Path, ddir: Path, z: Path, match: str) -> str:
    """Extract `z`, expect a refusal matching `match`, and check nothing at all was written."""
    before = snapshot(tmp_path)
    with pytest.raises(ArchiveError, match=match) as err:
        extract_zip(z)
    assert snapshot(tmp_path) - {"data"} == before - {"data"}  # the data dir itself may be created, empty
    assert not ddir.exists() or not any(ddir.iterdir())
    msg = str(err.value)
    assert msg.startswith(("Archive " + z.name, z.name)) and msg.endswith(".")
    return msg


@pytest.mark.parametrize(
    "name, why",
    [
        ("../evil.png", "'..' would write outside"),
        ("pets/../../evil.png", "'..' would write outside"),
        ("/tmp/evil.png", "absolute path"),
        ("C:\\Windows\\evil.png", "backslash"),
        ("C:/evil.png", "absolute path"),
        ("d:evil.png", "absolute path"),
        ("..\\..\\evil.png", "backslash"),
    ],
)
def test_zip_slip_entries(tmp_path, ddir, name, why):
    z = make_zip(tmp_path / "slip.zip", {**GOOD, name: b"evil"})
    msg = _refused(tmp_path, ddir, z, why)
    assert f"unsafe entry {name!r}" in msg
    assert not Path("/tmp/evil.png").exists()


def test_symlink_entry(tmp_path, ddir):
    link = zipfile.ZipInfo("pets/cat/link.png")
    link.create_system = 3  # Unix, so the mode bits in external_attr count
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = make_zip(tmp_path / "link.zip", [*GOOD.items(), (link, b"/etc/passwd"), ("pets/cat/link.png/x", b"x")])
    msg = _refused(tmp_path, ddir, z, "symbolic link")
    assert "'pets/cat/link.png'" in msg


def test_bomb_one_big_entry(tmp_path, ddir):
    z = make_zip(tmp_path / "bomb.zip", {**GOOD, "pets/zeros.bin": bytes(20 * 2**20)})
    assert z.stat().st_size < 100_000
    _refused(tmp_path, ddir, z, r"entry 'pets/zeros.bin' is compressed more than 200:1, which looks like a zip bomb")


def test_bomb_of_many_small_entries(tmp_path, ddir):
    """Each entry is under the per-entry rule's 1 MiB floor; the archive as a whole is ~1000:1."""
    entries = {**GOOD, **{f"pets/cat/pad{i}.bin": bytes(2**20 - 1) for i in range(24)}}
    z = make_zip(tmp_path / "many.zip", entries)
    _refused(tmp_path, ddir, z, r"would unpack [\d,]+ bytes from [\d,]+, more than 200:1, which looks like a zip bomb")


def test_total_size_cap(tmp_path, ddir, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_UNZIPPED_BYTES", "100000")
    z = make_zip(tmp_path / "big.zip", {**GOOD, "pets/noise.bin": os.urandom(150_000)})
    _refused(tmp_path, ddir, z, r"unpacks to more than 100000 bytes \(at 'pets/noise.bin'\).*LOUPE_MAX_UNZIPPED_BYTES")


def test_file_count_cap(tmp_path, ddir, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_ZIP_FILES", "4")
    z = make_zip(tmp_path / "count.zip", {**GOOD, "pets/dog/3.png": _png(230)})
    _refused(tmp_path, ddir, z, r"holds more than 4 files \(at 'pets/dog/3.png'\).*LOUPE_MAX_ZIP_FILES")


@pytest.mark.parametrize("second", ["pets/cat/1.png", "./pets/cat/1.png", "pets//cat/1.png"])
def test_duplicate_names(tmp_path, ddir, second):
    with pytest.warns(UserWarning) if second == "pets/cat/1.png" else _no_warning():
        z = make_zip(tmp_path / "dup.zip", [*GOOD.items(), (second, _png(99))])
    msg = _refused(tmp_path, ddir, z, "twice")
    assert repr(second) in msg


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_nested_zip_is_kept_as_a_file_never_unpacked(tmp_path, ddir):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("../../escape.png", b"x")  # would be refused if it were ever extracted
        zf.writestr("more/3.png", _png(1))
    z = make_zip(tmp_path / "outer.zip", {**GOOD, "pets/extra.zip": inner.getvalue()})
    src = resolve_source(str(z))
    assert sorted(src.files) == ["cat/1.png", "cat/2.png", "dog/1.png", "dog/2.png"]
    assert any("not images" in n and "extra.zip" in n for n in src.notes)
    assert not any(p.name in ("escape.png", "3.png") for p in tmp_path.rglob("*"))


def test_macos_junk_dot_files_and_a_wrapper_folder(tmp_path, ddir):
    z = make_zip(
        tmp_path / "mac.zip",
        {
            "pets/": b"",
            **GOOD,
            "__MACOSX/pets/cat/._1.png": b"\x00\x05\x16\x07resource fork",
            "pets/.DS_Store": b"\x00\x00\x00\x01Bud1",
            "pets/cat/._2.png": b"AppleDouble",
            "pets/.hidden/x.png": _png(5),
            "pets/.git/config": b"[core]",
            "./pets/cat/3.png": _png(6),  # a leading ./ is the same folder, not a second root
        },
    )
    root = extract_zip(z)
    assert root.name == "pets" and root.parent.parent == ddir.resolve()  # the wrapper is the root
    assert snapshot(root.parent) == {MARKER, "pets", "pets/cat", "pets/dog", *(k for k in GOOD), "pets/cat/3.png"}
    assert not (root.parent / "__MACOSX").exists()
    ds = open_dataset(str(z), image_size=8)
    assert ds.classes == ["cat", "dog"] and len(ds) == 5 and not ds.scan.corrupt


def test_no_wrapper_folder_and_two_top_folders(tmp_path, ddir):
    flat = {k.removeprefix("pets/"): v for k, v in GOOD.items()}
    root = extract_zip(make_zip(tmp_path / "flat.zip", flat))
    assert root.name.startswith("flat-") and snapshot(root) == {MARKER, "cat", "dog", *flat}


def test_hostile_upload_name_stays_in_the_uploads_folder(tmp_path, ddir):
    payload = make_zip(tmp_path / "src.zip", GOOD).read_bytes()
    before = snapshot(tmp_path)
    root = save_upload("../../../etc/cron.d/evil.zip", payload)
    created = snapshot(tmp_path) - before
    assert all(p.startswith("data") for p in created)
    assert (ddir / "uploads" / "evil.zip").is_file() and root.is_relative_to(ddir.resolve())


def test_a_refused_upload_leaves_only_the_saved_zip(tmp_path, ddir):
    payload = make_zip(tmp_path / "src.zip", {**GOOD, "../x.png": b"x"}).read_bytes()
    with pytest.raises(ArchiveError, match=r"slip.zip holds an unsafe entry '../x.png'"):
        save_upload("slip.zip", payload)
    assert snapshot(ddir) == {"uploads", "uploads/slip.zip"}
