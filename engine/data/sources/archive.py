"""Safe extraction of dataset archives (uploads and `.zip` specs) into the data folder.

An uploaded zip is untrusted input: every entry name is checked before anything is written
(no `..`, absolute paths, drive letters, backslashes or symlinks), sizes are capped both as declared
and as actually streamed (declared sizes can lie), and extraction goes to a temporary sibling folder
that is renamed into place only when complete, so a crash never leaves something that looks finished.
Extractions are keyed by a hash of the zip's content and kept, so a re-upload (or a restart) reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from engine.data.source import Progress, no_progress
from engine.env import env_int
from engine.errors import ArchiveError

MARKER = ".loupe-extracted"  # written last, inside the temp folder, before the rename
DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_MAX_FILES = 200_000
MAX_RATIO = 200  # uncompressed:compressed, for each entry and for the whole archive once over RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1024**2
CHUNK = 1024**2
STALE_TMP_SECONDS = 6 * 3600  # temp folders this old are leftovers of a crashed extraction

_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def data_dir() -> Path:
    """Where uploads and extracted archives live: env `LOUPE_DATA_DIR`, default `./data`."""
    return Path(os.environ.get("LOUPE_DATA_DIR") or "data").expanduser().resolve()


def _safe_name(name: str, fallback: str) -> str:
    """A file-name component safe on every OS: ASCII letters, digits, `._-`, no leading dot."""
    clean = _UNSAFE_CHARS.sub("_", name).strip("._ ")[:100]
    return clean or fallback


def _content_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _entry_parts(zip_name: str, info: zipfile.ZipInfo) -> list[str] | None:
    """The entry's path components, None for entries we skip; refuses anything that could escape."""
    name = info.filename
    what = f"Archive {zip_name} holds an unsafe entry {name!r}"
    if "\\" in name:
        raise ArchiveError(f"{what} (backslash in the path); re-create the zip with forward slashes.")
    if name.startswith("/") or _DRIVE.match(name):
        raise ArchiveError(f"{what} (absolute path); re-create the zip with relative paths.")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{what} ('..' would write outside the dataset folder); re-create the zip.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{what} (a symbolic link); re-create the zip without links.")
    if not parts or any(p == "__MACOSX" or p.startswith(".") for p in parts):
        return None  # macOS resource forks, .DS_Store, .git/...: never data
    return parts


def _plan(zip_path: Path, zf: zipfile.ZipFile, max_bytes: int, max_files: int):
    """Check every entry up front; return [(info, parts)] for the files to write."""
    zname = zip_path.name
    files: list[tuple[zipfile.ZipInfo, list[str]]] = []
    seen: dict[str, str] = {}
    dirs: set[str] = set()
    total = 0
    for info in zf.infolist():
        parts = _entry_parts(zname, info)
        if parts is None:
            continue
        key = "/".join(parts)
        if info.is_dir():
            dirs.add(key)
            continue
        if key in seen:
            raise ArchiveError(
                f"Archive {zname} holds {info.filename!r} twice; remove the duplicate and re-create the zip."
            )
        seen[key] = info.filename
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        files.append((info, parts))
        if len(files) > max_files:
            raise ArchiveError(
                f"Archive {zname} holds more than {max_files} files (at {info.filename!r}); "
                "split the dataset or raise LOUPE_MAX_ZIP_FILES."
            )
        total += info.file_size
        if total > max_bytes:
            raise ArchiveError(
                f"Archive {zname} unpacks to more than {max_bytes} bytes (at {info.filename!r}); "
                "use a smaller dataset or raise LOUPE_MAX_UNZIPPED_BYTES."
            )
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArchiveError(
                f"Archive {zname} entry {info.filename!r} is compressed more than {MAX_RATIO}:1, "
                "which looks like a zip bomb; re-create the zip from the original files."
            )
    packed = zip_path.stat().st_size
    if total > RATIO_MIN_BYTES and total > MAX_RATIO * packed:  # many small entries, each under the per-entry rule
        raise ArchiveError(
            f"Archive {zname} would unpack {total:,} bytes from {packed:,}, more than {MAX_RATIO}:1, which looks like "
            "a zip bomb; re-create the zip from the original files."
        )
    clash = dirs.intersection(seen)
    if clash:
        name = seen[sorted(clash)[0]]
        raise ArchiveError(f"Archive {zname} holds {name!r} both as a file and as a folder; re-create the zip.")
    if not files:
        raise ArchiveError(f"Archive {zname} holds no files (only folders or hidden files); check the zip.")
    return files


def _write_entries(zip_path: Path, zf: zipfile.ZipFile, files, tmp: Path, max_bytes: int, progress: Progress) -> int:
    """Stream each entry to disk, counting the bytes really written against the caps."""
    zname, written, base = zip_path.name, 0, tmp.resolve()
    for i, (info, parts) in enumerate(files):
        target = tmp.joinpath(*parts)
        if not target.resolve().is_relative_to(base):  # belt and braces: _entry_parts already refused this
            raise ArchiveError(f"Archive {zname} entry {info.filename!r} would write outside the dataset folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        entry = 0
        with zf.open(info) as src, open(target, "wb") as dst:
            while block := src.read(CHUNK):
                entry += len(block)
                written += len(block)
                if entry > info.file_size:
                    raise ArchiveError(
                        f"Archive {zname} entry {info.filename!r} is larger than it declares; the zip is corrupt "
                        "or malicious, re-create it."
                    )
                if written > max_bytes:
                    raise ArchiveError(
                        f"Archive {zname} unpacks to more than {max_bytes} bytes (at {info.filename!r}); "
                        "use a smaller dataset or raise LOUPE_MAX_UNZIPPED_BYTES."
                    )
                dst.write(block)
        progress(i + 1, len(files), "extracting")
    return written


def _dataset_root(folder: Path) -> Path:
    """A single wrapper folder at the top (`cats-vs-dogs/...`) is the dataset root, not a class."""
    top = [p for p in folder.iterdir() if p.name != MARKER]
    return top[0] if len(top) == 1 and top[0].is_dir() else folder


def _read_marker(folder: Path) -> Path | None:
    """The dataset root recorded by a completed extraction, or None if there is none (or it is damaged)."""
    try:
        rel = json.loads((folder / MARKER).read_text())["root"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    root = (folder / rel).resolve()
    return root if root.is_relative_to(folder.resolve()) and root.is_dir() else None


def _remove_stale_temps(base: Path, name: str) -> None:
    for old in base.glob(f".{name}.tmp-*"):
        try:
            if time.time() - old.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


def extract_zip(zip_path: Path, dest_root: Path | None = None, progress: Progress | None = None) -> Path:
    """Extract `zip_path` under `dest_root` (default `data_dir()`) and return the dataset root inside.

    The folder is `<zipstem>-<8 hex of the zip's content hash>`; if it already holds a completed
    extraction it is returned as is, so the same archive is unpacked once and reused across restarts.
    """
    zip_path = Path(zip_path)
    progress = progress or no_progress
    base = Path(dest_root) if dest_root is not None else data_dir()
    if not zip_path.is_file():
        raise ArchiveError(f"Archive {zip_path} does not exist; check the path.")
    if not zipfile.is_zipfile(zip_path):
        raise ArchiveError(f"{zip_path.name} is not a zip archive (or is damaged); upload a .zip file.")
    folder = base / f"{_safe_name(zip_path.stem, 'dataset')}-{_content_hash(zip_path)[:8]}"
    done = _read_marker(folder)
    if done is not None:
        return done

    max_bytes = env_int("LOUPE_MAX_UNZIPPED_BYTES", DEFAULT_MAX_BYTES)
    max_files = env_int("LOUPE_MAX_ZIP_FILES", DEFAULT_MAX_FILES)
    base.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(base, folder.name)
    tmp = base / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            files = _plan(zip_path, zf, max_bytes, max_files)
            tmp.mkdir()
            written = _write_entries(zip_path, zf, files, tmp, max_bytes, progress)
        root = _dataset_root(tmp)
        marker = {"root": root.relative_to(tmp).as_posix(), "zip": zip_path.name, "files": len(files), "bytes": written}
        (tmp / MARKER).write_text(json.dumps(marker))
        if folder.exists():  # an unfinished or damaged earlier extraction (no valid marker): replace it
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:
            if _read_marker(folder) is None:  # not a concurrent extraction of the same zip that won
                raise
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"Archive {zip_path.name} is corrupt ({e}); re-create or re-upload it.") from e
    except (zlib.error, EOFError, NotImplementedError) as e:
        raise ArchiveError(f"Archive {zip_path.name} cannot be unpacked ({e}); re-create it with plain deflate.") from e
    except RuntimeError as e:  # zipfile raises this for password-protected entries
        raise ArchiveError(f"Archive {zip_path.name} cannot be read ({e}); re-create it without a password.") from e
    except OSError as e:
        raise ArchiveError(
            f"Could not extract {zip_path.name} into {base} ({e}); check free disk space and permissions."
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _read_marker(folder)
    if result is None:
        raise ArchiveError(f"Extraction of {zip_path.name} into {folder} did not complete; try again.")
    return result


def save_upload(filename: str, data: bytes | BinaryIO, dest_root: Path | None = None) -> Path:
    """Store an uploaded `.zip` as `<data dir>/uploads/<safe name>` and return its extracted dataset root."""
    base = Path(dest_root) if dest_root is not None else data_dir()
    leaf = re.split(r"[\\/]", filename)[-1]  # browsers may send a full client-side path
    if not leaf.lower().endswith(".zip"):
        raise ArchiveError(f"Upload {filename!r} is not a .zip file; zip the dataset folder and upload that.")
    safe = _safe_name(leaf[:-4], "upload") + ".zip"
    uploads = base / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    target = uploads / safe
    part = uploads / f".{safe}.{uuid.uuid4().hex[:6]}.part"
    try:
        with open(part, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                if hasattr(data, "seekable") and data.seekable():
                    data.seek(0)  # Streamlit's UploadedFile may have been read already
                shutil.copyfileobj(data, f, CHUNK)
        os.replace(part, target)
    except OSError as e:
        raise ArchiveError(f"Could not save upload {filename!r} into {uploads} ({e}); check free disk space.") from e
    finally:
        part.unlink(missing_ok=True)
    return extract_zip(target, base)


def list_datasets(dest_root: Path | None = None) -> list[Path]:
    """Dataset roots of completed extractions under the data dir, newest first."""
    base = Path(dest_root) if dest_root is not None else data_dir()
    if not base.is_dir():
        return []
    found = []
    for folder in base.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        root = _read_marker(folder)
        if root is not None:
            found.append(((folder / MARKER).stat().st_mtime, root))
    return [root for _, root in sorted(found, key=lambda t: t[0], reverse=True)]
