"""Safe zip extraction: reuse, wrapper folders, and every way an archive can try to escape or explode."""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from pathlib import Path

import pytest

from engine.data.sources import archive
from engine.data.sources.archive import MARKER, data_dir, extract_zip, list_datasets, save_upload
from engine.errors import ArchiveError


@pytest.fixture
def ddir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "data"
    monkeypatch.setenv("LOUPE_DATA_DIR", str(d))
    for var in ("LOUPE_MAX_UNZIPPED_BYTES", "LOUPE_MAX_ZIP_FILES"):
        monkeypatch.delenv(var, raising=False)
    return d


def make_zip(path: Path, entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, payload in entries.items():
            zf.writestr(zipfile.ZipInfo(name), payload, compress_type=compression)
    return path


def all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.name != MARKER}


def test_data_dir_env(ddir):
    assert data_dir() == ddir.resolve()


def test_extracts_and_reuses(tmp_path, ddir, monkeypatch):
    z = make_zip(tmp_path / "pets.zip", {"cat/1.png": b"a", "dog/2.png": b"b", "labels.csv": b"x"})
    calls = []
    root = extract_zip(z, progress=lambda d, t, s: calls.append((d, t, s)))
    assert root.parent == ddir.resolve() and root.name.startswith("pets-") and len(root.name) == len("pets-") + 8
    assert (root / "cat/1.png").read_bytes() == b"a" and (root / "labels.csv").exists()
    assert calls[-1] == (3, 3, "extracting")
    assert list_datasets() == [root]
    # a second call (e.g. after a restart) must not unpack again
    monkeypatch.setattr(archive, "_write_entries", lambda *a, **k: pytest.fail("extracted twice"))
    assert extract_zip(z) == root
    # no temp folders left behind
    assert [p.name for p in ddir.iterdir()] == [root.name]


def test_same_name_different_content_gets_own_folder(tmp_path, ddir):
    a = extract_zip(make_zip(tmp_path / "d.zip", {"c/1.png": b"a", "e/1.png": b"a"}))
    b = extract_zip(make_zip(tmp_path / "d.zip", {"c/1.png": b"b", "e/1.png": b"b"}))
    assert a != b and (a / "c/1.png").read_bytes() == b"a"
    assert set(list_datasets()) == {a, b}


def test_nested_zip_left_as_file(tmp_path, ddir):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x.txt", "x")
    root = extract_zip(make_zip(tmp_path / "outer.zip", {"a/inner.zip": inner.getvalue(), "b.txt": b"b"}))
    assert all_files(root) == {"a", "a/inner.zip", "b.txt"}


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt", "C:/x.txt", "a/../../x", "a\\..\\..\\x.txt", "c:evil"])
def test_zip_slip_refused(tmp_path, ddir, name):
    z = make_zip(tmp_path / "slip.zip", {"ok/1.png": b"1", name: b"evil"})
    with pytest.raises(ArchiveError, match="slip.zip") as err:
        extract_zip(z)
    assert repr(name) in str(err.value)
    # nothing written anywhere: the only file under tmp_path is the zip itself
    assert all_files(tmp_path) - {"data"} == {"slip.zip"}
    assert not Path("/abs.txt").exists()
    assert not ddir.exists() or not any(ddir.iterdir())


def test_symlink_refused(tmp_path, ddir):
    info = zipfile.ZipInfo("a/link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr("a/real.txt", "x")
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link") as err:
        extract_zip(tmp_path / "link.zip")
    assert "a/link" in str(err.value)


def test_duplicate_entry_refused(tmp_path, ddir):
    with pytest.warns(UserWarning):  # zipfile itself warns about the duplicate name
        z = make_zip(tmp_path / "dup.zip", {"a/1.png": b"1"})
        with zipfile.ZipFile(z, "a") as zf:
            zf.writestr("a/1.png", b"2")
    with pytest.raises(ArchiveError, match="twice") as err:
        extract_zip(z)
    assert "a/1.png" in str(err.value)


def test_file_and_folder_clash_refused(tmp_path, ddir):
    z = make_zip(tmp_path / "clash.zip", {"a": b"1", "a/b.png": b"2"})
    with pytest.raises(ArchiveError, match="both as a file and as a folder"):
        extract_zip(z)


def test_zip_bomb_ratio_refused(tmp_path, ddir):
    z = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(50 * 1024**2)})
    with pytest.raises(ArchiveError, match="zip bomb"):
        extract_zip(z)
    assert not ddir.exists() or not any(ddir.iterdir())


def test_total_size_cap(tmp_path, ddir, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_UNZIPPED_BYTES", str(1024**2))
    z = make_zip(tmp_path / "big.zip", {"a.bin": os.urandom(600_000), "b.bin": os.urandom(600_000)})
    with pytest.raises(ArchiveError, match="LOUPE_MAX_UNZIPPED_BYTES") as err:
        extract_zip(z)
    assert "b.bin" in str(err.value)


def test_streamed_cap_when_declared_sizes_pass(tmp_path, ddir, monkeypatch):
    """If the up-front check is fooled, the bytes actually written still hit the cap."""
    monkeypatch.setenv("LOUPE_MAX_UNZIPPED_BYTES", str(1024**2))
    real_plan = archive._plan
    monkeypatch.setattr(archive, "_plan", lambda p, zf, mb, mf: real_plan(p, zf, 10 * mb, mf))
    z = make_zip(tmp_path / "big.zip", {"a.bin": os.urandom(3 * 1024**2)})
    with pytest.raises(ArchiveError, match="unpacks to more than 1048576 bytes"):
        extract_zip(z)
    assert not any(ddir.iterdir())  # the half extraction was removed


def test_lying_declared_size_stopped(tmp_path, ddir):
    """An entry declaring fewer bytes than it holds is stopped at the declared size and refused."""
    payload = bytes(range(256)) * 8192  # 2 MiB
    z = make_zip(tmp_path / "liar.zip", {"d/big.bin": payload, "d/ok.txt": b"ok"})
    raw = bytearray(z.read_bytes())
    cd = raw.find(b"PK\x01\x02")  # first central directory record: d/big.bin
    assert struct.unpack_from("<I", raw, cd + 24)[0] == len(payload)
    struct.pack_into("<I", raw, cd + 24, 1000)  # declared uncompressed size: 1000 bytes
    z.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="liar.zip"):
        extract_zip(z)
    assert not any(ddir.iterdir())


def test_too_many_files(tmp_path, ddir, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_ZIP_FILES", "5")
    z = make_zip(tmp_path / "many.zip", {f"c/{i}.png": b"x" for i in range(6)})
    with pytest.raises(ArchiveError, match="more than 5 files"):
        extract_zip(z)


def test_bad_env_value(tmp_path, ddir, monkeypatch):
    monkeypatch.setenv("LOUPE_MAX_ZIP_FILES", "lots")
    with pytest.raises(Exception, match="LOUPE_MAX_ZIP_FILES"):
        extract_zip(make_zip(tmp_path / "a.zip", {"a.txt": b"a"}))


def test_not_a_zip_and_corrupt(tmp_path, ddir):
    bad = tmp_path / "photo.zip"
    bad.write_bytes(b"\x89PNG not a zip at all")
    with pytest.raises(ArchiveError, match="photo.zip is not a zip"):
        extract_zip(bad)
    z = make_zip(tmp_path / "broken.zip", {"a.txt": b"hello world" * 100}, zipfile.ZIP_STORED)
    raw = bytearray(z.read_bytes())
    raw[40:60] = bytes(20)  # damage the data (after the 35-byte local header), keep the directory intact
    z.write_bytes(bytes(raw))
    with pytest.raises(ArchiveError, match="broken.zip"):
        extract_zip(z)
    with pytest.raises(ArchiveError, match="does not exist"):
        extract_zip(tmp_path / "missing.zip")


def test_empty_zip_refused(tmp_path, ddir):
    with pytest.raises(ArchiveError, match="no files"):
        extract_zip(make_zip(tmp_path / "empty.zip", {"__MACOSX/x": b"", "only/": b""}))


def test_half_extraction_is_redone(tmp_path, ddir):
    z = make_zip(tmp_path / "d.zip", {"c/1.png": b"a", "e/2.png": b"b"})
    root = extract_zip(z)
    (root / MARKER).unlink()  # as if a crash had left the folder without its marker
    (root / "c/1.png").write_bytes(b"garbage")
    assert extract_zip(z) == root and (root / "c/1.png").read_bytes() == b"a"


def test_save_upload(tmp_path, ddir):
    payload = make_zip(tmp_path / "src.zip", {"ds/a/1.png": b"1", "ds/b/2.png": b"2"}).read_bytes()
    root = save_upload("../../My Data (1).ZIP", payload)
    assert root.name == "ds" and (root / "a/1.png").exists()
    uploads = list((ddir / "uploads").iterdir())
    assert [p.name for p in uploads] == ["My_Data_1.zip"]
    assert {f for f in all_files(tmp_path) if not f.startswith("data")} == {"src.zip"}
    # a file object works too, even if it was read before
    f = io.BytesIO(payload)
    f.read()
    assert save_upload("C:\\Users\\me\\ds.zip", f) == list_datasets()[0]


def test_save_upload_refuses_non_zip(ddir):
    with pytest.raises(ArchiveError, match="not a .zip"):
        save_upload("images.tar.gz", b"x")


def test_list_datasets_newest_first(tmp_path, ddir):
    assert list_datasets() == []
    a = extract_zip(make_zip(tmp_path / "a.zip", {"x/1.png": b"1", "y/1.png": b"1"}))
    b = extract_zip(make_zip(tmp_path / "b.zip", {"x/1.png": b"2", "y/1.png": b"2"}))
    os.utime(a / MARKER, (1, 1))  # no wrapper folder: the root is the extraction folder itself
    os.utime(b / MARKER, (2e9, 2e9))
    assert list_datasets() == [b, a]
    (ddir / "uploads").mkdir()
    assert list_datasets() == [b, a]
