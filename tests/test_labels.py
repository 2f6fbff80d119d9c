"""Labels of training images: avatars by construction, folder label files, CelebA's attribute list."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aae.data import avatar_parts
from aae.labels import AVATAR_FIELDS, GROUPS, avatar_labels, avatar_vocabulary, folder_labels, groups_of, hidden, load_labels


def test_avatar_labels_are_the_parts_it_was_rendered_with() -> None:
    table = avatar_labels(20, seed=3)
    assert tuple(table.values) == AVATAR_FIELDS
    for i, row in enumerate(table.rows()):
        parts = avatar_parts(3, i)
        assert row == {name: parts[name].name.lower() for name in AVATAR_FIELDS}  # type: ignore[attr-defined]


def test_avatar_vocabulary_uses_lower_case_enum_names() -> None:
    values = avatar_vocabulary()
    assert "pale" in values["skin_color"] and "none" in values["accessory"] and "hijab" in values["top"]
    assert all(v == v.lower() for vals in values.values() for v in vals)


def test_groups_cover_every_value_of_their_field() -> None:
    values = avatar_vocabulary()
    for field, table in GROUPS.values():
        grouped = {v for members in table.values() for v in members}
        assert set(values[field]) <= grouped, f"{field}: {set(values[field]) - grouped} in no group"
    assert groups_of({"accessory": "sunglasses", "mouth": "smile"}) == {"glasses": "sunglasses", "expression": "happy"}


def test_hair_colour_is_hidden_under_a_hat() -> None:
    assert hidden({"top": "hijab", "hair_color": "red"}) == {"hair_color", "facial_hair"}
    assert hidden({"top": "turban", "hair_color": "red"}) == {"hair_color"}
    assert hidden({"top": "bob", "hair_color": "red"}) == set()
    assert hidden({"hair_color": "red"}) == set()  # a folder's labels have no top


@pytest.mark.parametrize(
    ("name", "values"),
    [("hair_color", ("auburn", "platinum")), ("facial_hair", ("none", "moustache_fancy")), ("accessory", ("none", "round"))],
)
def test_what_a_top_hides_is_what_the_renderer_does_not_draw(name: str, values: tuple[str, str]) -> None:
    """Every top hides an attribute exactly when two of its values render the same pixels (on another avatar, with
    other values than the ones ``hidden_by_top`` probes)."""
    from aae.labels import hidden_by_top, render_labeled

    tops = avatar_vocabulary()["top"]
    hiding = {top for top in tops if name in hidden_by_top()[top]}
    assert hiding, name
    for top in tops:
        a, b = (render_labeled({"top": top, name: v}, 3, 11, 64) for v in values)
        assert np.array_equal(a, b) == (top in hiding), (name, top)


def _folder(tmp_path, names):  # type: ignore[no-untyped-def]
    for name in names:
        Image.new("RGB", (8, 8)).save(tmp_path / name)


def test_csv_and_jsonl_label_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _folder(tmp_path, ["a.png", "b.png"])
    (tmp_path / "labels.csv").write_text("file,smiling\nb.png,yes\na.png,no\n")
    table = folder_labels(tmp_path)
    assert table.rows() == [{"smiling": "no"}, {"smiling": "yes"}]
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "metadata.jsonl").write_text(
        "\n".join(json.dumps({"file_name": n, "glasses": g}) for n, g in [("a.png", "x"), ("b.png", "y")])
    )
    assert load_labels(str(tmp_path), 2) is not None and folder_labels(tmp_path).rows()[1] == {"glasses": "y"}


def test_celeba_attribute_list_is_read_as_it_is(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _folder(tmp_path, ["000001.jpg", "000002.jpg"])
    (tmp_path / "list_attr_celeba.txt").write_text("2\n5_o_Clock_Shadow Smiling\n000001.jpg -1  1\n000002.jpg  1 -1\n")
    table = folder_labels(tmp_path)
    assert table.rows() == [{"5_o_Clock_Shadow": "false", "Smiling": "true"}, {"5_o_Clock_Shadow": "true", "Smiling": "false"}]
    assert np.array_equal(table.codes, [[0, 1], [1, 0]])


def test_an_image_without_labels_is_an_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    _folder(tmp_path, ["a.png", "b.png"])
    (tmp_path / "labels.csv").write_text("file,smiling\na.png,no\n")
    with pytest.raises(ValueError, match=r"no labels for image b\.png"):
        folder_labels(tmp_path)
