"""Server paths typed into the app: only inside the allowed data roots, checked on the real path.

Every outside path used here is a real, openable dataset, so a missing check would show up as the
dataset opening rather than as a refusal.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.data import resolve_source
from engine.data.roots import BUILTIN_DATASETS_DIR, allowed_roots, check_allowed, check_spec
from engine.errors import DatasetError
from tests.conftest import make_class_folders

APP = Path(__file__).resolve().parents[2] / "streamlit_app.py"


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """tmp/allowed (the only configured root) and tmp/outside, each holding an openable dataset."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    make_class_folders(allowed / "pets", {"cat": 3, "dog": 3})
    make_class_folders(outside / "secret", {"a": 3, "b": 3})
    monkeypatch.setenv("LOUPE_DATA_ROOTS", str(allowed))
    return {"allowed": allowed, "outside": outside}


def test_inside_a_root_is_allowed(layout):
    target = layout["allowed"] / "pets"
    assert check_allowed(str(target)) == target.resolve()
    assert check_spec(str(target)) == str(target)


def test_outside_is_refused_with_one_sentence(layout):
    target = layout["outside"] / "secret"
    resolve_source(str(target))  # the data itself is fine: only the root check may refuse it
    with pytest.raises(DatasetError) as err:
        check_allowed(str(target))
    msg = str(err.value)
    assert msg.startswith(f"'{target}' is outside the allowed data roots (")
    assert str(layout["allowed"].resolve()) in msg and "LOUPE_DATA_ROOTS" in msg
    assert msg.count(". ") == 0 and msg.endswith(".")


def test_system_folder_refused(layout):
    with pytest.raises(DatasetError, match=r"^'/etc' is outside the allowed data roots"):
        check_allowed("/etc")


def test_dotdot_escape_is_refused(layout):
    sneaky = f"{layout['allowed']}/pets/../../outside/secret"
    assert Path(sneaky).exists()
    with pytest.raises(DatasetError, match="outside the allowed data roots"):
        check_allowed(sneaky)
    # `..` that stays inside is fine
    assert check_allowed(f"{layout['allowed']}/pets/cat/..") == (layout["allowed"] / "pets").resolve()


def test_symlink_inside_pointing_outside_is_refused(layout):
    link = layout["allowed"] / "shortcut"
    os.symlink(layout["outside"] / "secret", link)
    with pytest.raises(DatasetError, match="'.*shortcut' is outside the allowed data roots"):
        check_allowed(str(link))
    with pytest.raises(DatasetError, match="outside the allowed data roots"):
        check_allowed(str(link / "a"))


def test_symlink_outside_pointing_inside_is_allowed(layout):
    link = layout["outside"] / "to-pets"
    os.symlink(layout["allowed"] / "pets", link)
    assert check_allowed(str(link)) == (layout["allowed"] / "pets").resolve()


def test_nonexistent_inside_says_so_and_outside_does_not_leak_existence(layout):
    with pytest.raises(DatasetError, match="'.*no-such' does not exist"):
        check_allowed(str(layout["allowed"] / "no-such"))
    # outside, a missing and an existing path get the same refusal: no probing the disk
    for p in (layout["outside"] / "no-such", layout["outside"] / "secret"):
        with pytest.raises(DatasetError, match="outside the allowed data roots"):
            check_allowed(str(p))


def test_builtins_always_allowed_and_empty_refused(layout):
    assert check_spec("builtin:digits") == "builtin:digits"
    with pytest.raises(DatasetError, match="No path given"):
        check_allowed("  ")


def test_several_roots_and_the_data_dir_always_allowed(tmp_path, layout, monkeypatch):
    monkeypatch.setenv("LOUPE_DATA_ROOTS", os.pathsep.join([str(layout["allowed"]), str(layout["outside"])]))
    roots = allowed_roots()
    data = Path(os.environ["LOUPE_DATA_DIR"]).resolve()
    assert roots == [data, layout["allowed"].resolve(), layout["outside"].resolve()]
    assert check_allowed(str(layout["outside"] / "secret")) == (layout["outside"] / "secret").resolve()
    (tmp_path / "data" / "upload-1").mkdir(parents=True)
    monkeypatch.setenv("LOUPE_DATA_ROOTS", str(layout["allowed"]))
    assert check_allowed(str(tmp_path / "data" / "upload-1")).name == "upload-1"  # uploads always open


def test_defaults_without_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv("LOUPE_DATA_ROOTS")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "..")
    roots = allowed_roots()
    data = Path(os.environ["LOUPE_DATA_DIR"]).resolve()
    assert roots == [data, (tmp_path / "..").resolve(), (tmp_path / "home").resolve(), BUILTIN_DATASETS_DIR.resolve()]
    # an app started from / must not allow the whole disk
    monkeypatch.chdir("/")
    assert Path("/") not in allowed_roots()
    with pytest.raises(DatasetError, match="outside the allowed data roots"):
        check_allowed("/etc")


# --- the Dataset page ------------------------------------------------------------------------------


def _open_path(at: AppTest, path: str) -> AppTest:
    at.segmented_control(key="dataset.source").set_value("Server path").run()
    return at.text_input(key="dataset.path").input(path).run()


def _app(dataset: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["dataset"] = dataset
    return at.run()


def test_page_refuses_a_typed_path_outside_the_roots(layout):
    at = _app("builtin:digits")
    assert not at.error and at.metric  # the built-in opened
    target = str(layout["outside"] / "secret")
    at = _open_path(at, target)
    assert not at.exception
    assert [e.value for e in at.error] == [str(_refusal(target))]
    assert not at.metric  # nothing of the refused dataset was shown
    # a path inside opens normally in the same session
    at = _open_path(at, str(layout["allowed"] / "pets"))
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Images"] == "6"


def test_page_refuses_outside_paths_from_the_url_too(layout):
    at = _app("/etc")
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("'/etc' is outside the allowed data roots")


def test_page_refuses_a_symlink_escape(layout):
    os.symlink(layout["outside"] / "secret", layout["allowed"] / "shortcut")
    at = _open_path(_app("builtin:digits"), str(layout["allowed"] / "shortcut"))
    assert not at.exception and not at.metric
    assert len(at.error) == 1 and "outside the allowed data roots" in at.error[0].value


def _refusal(path: str) -> DatasetError:
    try:
        check_allowed(path)
    except DatasetError as e:
        return e
    raise AssertionError(f"{path} was allowed")
