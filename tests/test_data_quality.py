"""Image quality measures (`engine.data.quality`) on constructed images in tmp_path: a sharp photo and the same photo
blurred (scikit-image's real pictures), a dark and a washed-out copy, a constant image, a gray photo in a colour
set, an odd aspect ratio and an odd size; each measure flags its image first and leaves the sharp photos alone,
and every score equals cleanvision's own per-image computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from engine.data import open_dataset
from engine.data import quality as q

SIDE = 96  # files on disk; the working copy is 64 px (cleanvision's blur resolution)


def _photos() -> dict[str, np.ndarray]:
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea(), "rocket": data.rocket()}


def _square(img: np.ndarray, side: int = SIDE, box: tuple[float, float] = (0.0, 0.0)) -> Image.Image:
    """A square crop of `img` starting at the fractions `box` of its free room, resized to `side`."""
    h, w = img.shape[:2]
    s = int(min(h, w) * 0.7)  # two crops of a square photo differ (no accidental duplicates)
    y, x = int(box[0] * (h - s)), int(box[1] * (w - s))  # box: where in the free room the crop starts
    return Image.fromarray(img[y : y + s, x : x + s]).resize((side, side), Image.Resampling.LANCZOS)


def make_quality_folder(root: Path) -> Path:
    """Two classes of sharp photos plus one image per problem (`problem/<measure>.png`)."""
    from skimage import data

    photos = _photos()
    for k, (name, img) in enumerate(photos.items()):
        for j, box in enumerate(((0.0, 0.0), (1.0, 1.0))):
            folder = root / ("people" if k % 2 == 0 else "things")
            folder.mkdir(parents=True, exist_ok=True)
            _square(img, box=box).save(folder / f"{name}{j}.png")
    sharp = np.asarray(_square(photos["astronaut"], box=(0.5, 0.5)))
    (root / "problem").mkdir()
    Image.fromarray(sharp).save(root / "people" / "sharp.png")
    Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(4)).save(root / "problem" / "blurry.png")
    Image.fromarray((sharp * 0.15).astype(np.uint8)).save(root / "problem" / "dark.png")
    Image.fromarray((255 - (255 - sharp.astype(np.float64)) * 0.03).astype(np.uint8)).save(
        root / "problem" / "light.png"
    )
    Image.fromarray(np.full((SIDE, SIDE, 3), 140, np.uint8)).save(root / "problem" / "low_information.png")
    _square(data.camera()).convert("L").save(root / "problem" / "grayscale.png")
    Image.fromarray(photos["chelsea"]).resize((240, 48)).save(root / "problem" / "odd_aspect_ratio.png")
    Image.fromarray(photos["coffee"]).resize((400, 400)).save(root / "problem" / "odd_size.png")
    return root


@pytest.fixture(scope="module")
def quality_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_quality_folder(tmp_path_factory.mktemp("quality"))


@pytest.fixture(scope="module")
def opened(quality_folder: Path, session_cache: Path):
    with pytest.MonkeyPatch.context() as mp:  # module scope runs before the per-test isolated_dirs
        mp.setenv("LOUPE_CACHE_DIR", str(session_cache))
        return open_dataset(str(quality_folder), image_size=64)


def _index(ds, item: str) -> int:
    return [ds.source.item_id(i) for i in range(len(ds))].index(item)


@pytest.mark.parametrize(
    "measure", ["blurry", "dark", "light", "low_information", "grayscale", "odd_aspect_ratio", "odd_size"]
)
def test_each_measure_flags_its_image_first_and_no_sharp_photo(opened, measure: str):
    ds = opened
    report = q.quality_report(ds)
    flagged = [ds.source.item_id(int(i)) for i in report.flagged(measure)]
    assert flagged and flagged[0] == f"problem/{measure}.png", (measure, flagged)
    photos = [ds.source.item_id(i) for i in range(len(ds)) if ds.source.item_id(i).split("/")[0] != "problem"]
    assert not set(flagged) & set(photos), (measure, flagged)
    assert report.scores[measure][_index(ds, f"problem/{measure}.png")] < report.thresholds[measure]


def test_blurred_photo_scores_below_the_same_photo_sharp(opened):
    report = q.quality_report(opened)
    blur = report.scores["blurry"]
    assert blur[_index(opened, "problem/blurry.png")] < 0.29 <= blur[_index(opened, "people/sharp.png")]


def test_scores_equal_cleanvisions_own_per_image_functions(opened):
    """Each vectorised score is cleanvision's definition: compare with its per-image property classes on PIL images
    of the same decoded pixels (the grayscale measure is ours and cleanvision's 'L'-mode rule is checked by hand)."""
    import pandas as pd
    from cleanvision.issue_managers.image_property import BlurrinessProperty, BrightnessProperty, EntropyProperty

    ds = opened
    report = q.quality_report(ds)
    p = q.cleanvision_params()
    for i in range(len(ds)):
        img = Image.fromarray(np.asarray(ds.images[i]))

        def score(prop, issue, img=img, **kw):
            return prop.get_scores(pd.DataFrame([prop.calculate(img)]), issue, **kw).iloc[0, 0]

        blurry = score(BlurrinessProperty(), "blurry", **{k: v for k, v in p["blurry"].items() if k != "threshold"})
        info = score(
            EntropyProperty(), "low_information", normalizing_factor=p["low_information"]["normalizing_factor"]
        )
        expected = {
            "blurry": blurry,
            "dark": score(BrightnessProperty("dark"), "dark"),
            "light": score(BrightnessProperty("light"), "light"),
            "low_information": info,
        }
        for key, value in expected.items():
            assert report.scores[key][i] == pytest.approx(value, abs=1e-9), (key, ds.source.item_id(i))
    assert report.scores["grayscale"][_index(ds, "problem/grayscale.png")] == 0.0


def test_odd_aspect_ratio_reads_the_size_on_disk(opened):
    report = q.quality_report(opened)
    assert report.scores["odd_aspect_ratio"][_index(opened, "problem/odd_aspect_ratio.png")] == pytest.approx(48 / 240)


def test_grayscale_does_not_apply_to_a_gray_dataset(tmp_path: Path):
    from skimage import data

    for name in ("a", "b"):
        for j in range(3):
            (tmp_path / "g" / name).mkdir(parents=True, exist_ok=True)
            _square(data.camera(), side=32, box=(j / 3, 0)).convert("L").save(tmp_path / "g" / name / f"{j}.png")
    ds = open_dataset(str(tmp_path / "g"))
    report = q.quality_report(ds)
    assert ds.channels == 1 and report.applies["grayscale"] is False
    assert len(report.flagged("grayscale")) == 0 and report.counts()["grayscale"] == 0


def test_scores_are_cached_per_dataset(opened, monkeypatch: pytest.MonkeyPatch):
    first = q.quality_report(opened)

    def recompute(*a, **kw):
        raise AssertionError("the scores were computed again")

    monkeypatch.setattr(q, "score_images", recompute)
    again = q.quality_report(opened)
    for key in q.PIXEL_MEASURES:
        np.testing.assert_array_equal(first.scores[key], again.scores[key])


def test_cli_data_quality_json_and_text(quality_folder: Path, capsys: pytest.CaptureFixture):
    from engine.cli.main import main

    assert main(["data", "quality", str(quality_folder), "--image-size", "64", "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    blurry = out["measures"]["blurry"]
    assert blurry["source"] == "cleanvision" and "below 0.29" in blurry["rule"]
    assert blurry["items"][0]["item"] == "problem/blurry.png" and blurry["items"][0]["score"] < 0.29
    assert out["measures"]["grayscale"]["source"] == "Loupe"
    assert main(["data", "quality", str(quality_folder), "--image-size", "64", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "Blurry: " in text and "problem/blurry.png" in text and "nan" not in text.lower()
