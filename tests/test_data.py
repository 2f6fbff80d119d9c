from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("python_avatars")

from aae.data import avatar_faces, image_folder, lfw_faces, render_avatar


def test_avatar_is_a_pure_function_of_seed_and_index() -> None:
    a = render_avatar(seed=3, index=5, size=64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_avatar(3, 5, 64))
    assert not np.array_equal(a, render_avatar(3, 6, 64))
    assert not np.array_equal(a, render_avatar(4, 5, 64))


def test_avatar_dataset_is_cached_and_matches_single_renders(tmp_path: Path) -> None:
    faces = avatar_faces(6, seed=1, size=32, cache_dir=tmp_path, progress=False)
    assert faces.shape == (6, 32, 32, 3)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    assert np.array_equal(faces[4], render_avatar(1, 4, 32))
    again = avatar_faces(6, seed=1, size=32, cache_dir=tmp_path, progress=False)
    assert np.array_equal(faces, again)


def test_held_out_avatars_start_after_the_training_set_and_reuse_larger_caches(tmp_path: Path) -> None:
    held_out = avatar_faces(3, seed=1, size=32, cache_dir=tmp_path, progress=False, start=6)
    assert [np.array_equal(held_out[i], render_avatar(1, 6 + i, 32)) for i in range(3)] == [True] * 3
    assert [p.name for p in tmp_path.glob("*.npy")] == ["avatars-v1-seed1-from6-n3-32px.npy"]
    train = avatar_faces(10, seed=1, size=32, cache_dir=tmp_path, progress=False)
    inside = avatar_faces(4, seed=1, size=32, cache_dir=tmp_path, progress=False, start=5)  # sliced, not rendered
    assert np.array_equal(inside, train[5:9]) and len(list(tmp_path.glob("*.npy"))) == 2
    assert np.array_equal(avatar_faces(2, seed=1, size=32, cache_dir=tmp_path, progress=False, start=7), held_out[1:])


def test_image_folder_center_crops_and_resizes(tmp_path: Path) -> None:
    wide = np.zeros((40, 80, 3), dtype=np.uint8)
    wide[:, 20:60] = 255  # a white centre square between black side bands
    Image.fromarray(wide).save(tmp_path / "wide.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((30, 30), 128, dtype=np.uint8)).save(tmp_path / "sub" / "grey.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    faces = image_folder(tmp_path, size=16, progress=False)
    assert faces.shape == (2, 16, 16, 3)
    by_mean = sorted(faces, key=lambda f: float(f.mean()))
    assert abs(float(by_mean[0].mean()) - 128) < 3  # the grey JPEG, now RGB
    assert by_mean[1].min() > 240  # the crop kept only the white centre
    assert np.array_equal(image_folder(tmp_path, size=16, progress=False, start=1), faces[1:])


def test_image_folder_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no images"):
        image_folder(tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder(tmp_path / "missing", progress=False)


def test_lfw_subset_has_100_faces() -> None:
    faces = lfw_faces(64)
    assert faces.shape == (100, 64, 64, 3)
    assert faces.std() > 10
