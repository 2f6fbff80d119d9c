"""Training data: procedural avatar faces, any folder of images, and the LFW subset.

Every loader returns a uint8 array of shape [N, H, W, 3] (RGB). ``to_tensor_dataset``
turns it into float tensors in [0, 1], NCHW, for training.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from synthgen.core.files import atomic_file

log = logging.getLogger(__name__)

# A fixed light grey-blue background: the model should spend its capacity on faces.
AVATAR_BACKGROUND = "#dfe6ee"
# The avatar SVG is 264x280. This square crops head and shoulders, with the face centred.
AVATAR_VIEWBOX = "32 8 200 200"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DATA_VERSION = "avatars-v1"


@functools.cache
def _avatar_parts() -> dict[str, list[object]]:
    """The attribute choices for an avatar; costumes that hide the face are left out."""
    import python_avatars as pa

    hidden_tops = {"ASTRONAUT", "HAT", "GLADIATOR_HELMET", "JEDI", "NONE"}
    tops: list[object] = [h for h in pa.HairType if h.name not in hidden_tops]
    tops += [h for h in pa.HatType if h.name in {"HIJAB", "TURBAN", "WINTER_HAT_1", "WINTER_HAT_2"}]
    clothes = [c for c in pa.ClothingType if c.name not in {"NONE", "ASTRONAUT_SUIT", "GLADIATOR", "JEDI_ROBE", "CHEF"}]
    return {
        "top": tops,
        "hat_color": list(pa.ClothingColor),
        "eyebrows": [e for e in pa.EyebrowType if e.name != "NONE"],
        "eyes": list(pa.EyeType),
        "nose": list(pa.NoseType),
        "mouth": [m for m in pa.MouthType if m.name != "VOMIT"],
        "facial_hair": list(pa.FacialHairType),
        "skin_color": list(pa.SkinColor),
        "hair_color": list(pa.HairColor),
        "facial_hair_color": list(pa.HairColor),
        "accessory": list(pa.AccessoryType),
        "clothing": clothes,
        "clothing_color": list(pa.ClothingColor),
    }


def _avatar_rng(seed: int, index: int) -> np.random.Generator:
    # Philox is counter-based: the avatar for (seed, index) never depends on the others.
    return np.random.Generator(np.random.Philox(key=[seed & (2**64 - 1), index]))


def avatar_parts(seed: int, index: int) -> dict[str, object]:
    """The python_avatars parts (enum members) of avatar number ``index`` of dataset ``seed``."""
    import python_avatars as pa

    rng = _avatar_rng(seed, index)
    parts = {name: choices[int(rng.integers(len(choices)))] for name, choices in _avatar_parts().items()}
    if rng.random() < 0.6:  # most faces are clean-shaven and without glasses
        parts["facial_hair"] = pa.FacialHairType.NONE
    if rng.random() < 0.6:
        parts["accessory"] = pa.AccessoryType.NONE
    return parts


def parts_svg(parts: Mapping[str, object]) -> str:
    """The SVG of an avatar made of these python_avatars parts, cropped to the face (``AVATAR_VIEWBOX``)."""
    import python_avatars as pa

    avatar = pa.Avatar(style=pa.AvatarStyle.TRANSPARENT, shirt_graphic=pa.ClothingGraphic.NONE, **parts)
    svg: str = avatar.render()
    return svg.replace('viewBox="0 0 264 280"', f'viewBox="{AVATAR_VIEWBOX}"').replace(
        'width="264px" height="280px"', 'width="200px" height="200px"'
    )


def avatar_svg(seed: int, index: int) -> str:
    """The SVG of avatar number ``index`` of dataset ``seed``; a pure function of both."""
    return parts_svg(avatar_parts(seed, index))


def render_svg(svg: str, size: int = 64) -> np.ndarray:
    """Rasterize an avatar SVG as a uint8 array [size, size, 3] on the avatars' background."""
    import resvg_py

    png = resvg_py.svg_to_bytes(
        svg_string=svg,
        background=AVATAR_BACKGROUND,
        width=size,
        height=size,
        skip_system_fonts=True,
    )
    image = Image.open(io.BytesIO(bytes(png))).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def render_avatar(seed: int, index: int, size: int = 64) -> np.ndarray:
    """Render one avatar face as a uint8 array [size, size, 3]."""
    return render_svg(avatar_svg(seed, index), size)


def _avatar_cache_name(seed: int, start: int, count: int, size: int) -> str:
    first = f"-from{start}" if start else ""  # the training sets (start 0) keep their original names
    return f"{DATA_VERSION}-seed{seed}{first}-n{count}-{size}px.npy"


def _covering_cache(cache_dir: Path, seed: int, start: int, count: int, size: int) -> np.ndarray | None:
    """Avatars [start, start + count) sliced from any cached set of the same seed and size that holds them."""
    pattern = re.compile(rf"{re.escape(DATA_VERSION)}-seed{seed}(?:-from(\d+))?-n(\d+)-{size}px\.npy")
    for path in sorted(cache_dir.glob(f"{DATA_VERSION}-seed{seed}-*-{size}px.npy")):
        match = pattern.fullmatch(path.name)
        if match is None:
            continue
        first, n = int(match.group(1) or 0), int(match.group(2))
        if first <= start and start + count <= first + n:
            log.info("avatars %d..%d of seed %d from %s", start, start + count - 1, seed, path)
            return np.array(np.load(path, mmap_mode="r")[start - first : start - first + count])
    return None


def avatar_faces(
    count: int, seed: int = 0, size: int = 64, cache_dir: str | Path | None = None, progress: bool = True, start: int = 0
) -> np.ndarray:
    """Avatar faces ``start`` .. ``start + count - 1`` of dataset ``seed``, cached on disk as one .npy file.

    A nonzero ``start`` renders faces that a model trained on the first ``start`` never saw (held-out data).
    A request that a larger cached set already holds is sliced from it instead of rendered.
    """
    cache_path = None
    if cache_dir is not None:
        cached = _covering_cache(Path(cache_dir), seed, start, count, size)
        if cached is not None:
            return cached
        cache_path = Path(cache_dir) / _avatar_cache_name(seed, start, count, size)
    faces = np.empty((count, size, size, 3), dtype=np.uint8)
    for i in tqdm(range(count), desc="rendering avatars", unit="img", disable=not progress):
        faces[i] = render_avatar(seed, start + i, size)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(cache_path) as f:  # a killed run never leaves a truncated cache
            np.save(f, faces)
    return faces


def _center_crop_resize(image: Image.Image, size: int) -> np.ndarray:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder``, recursively, in a stable order."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def image_folder(
    folder: str | Path,
    size: int = 64,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    start: int = 0,
) -> np.ndarray:
    """Load any folder of images (CelebA, FFHQ, ...), center-cropped and resized to size x size.

    The images are taken in ``list_images`` order, from number ``start`` on, at most ``limit`` of them.
    """
    paths = list_images(folder)[start:]
    paths = paths[:limit]
    if not paths:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    cache_path = None
    if cache_dir is not None:
        digest = hashlib.sha256("\n".join(str(p) for p in paths).encode()).hexdigest()[:12]
        cache_path = Path(cache_dir) / f"folder-{digest}-n{len(paths)}-{size}px.npy"
        if cache_path.exists():
            return np.load(cache_path)
    faces = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc=f"loading {folder}", unit="img", disable=not progress)):
        with Image.open(path) as image:
            faces[i] = _center_crop_resize(image, size)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache_path, faces)
    return faces


def lfw_faces(size: int = 64) -> np.ndarray:
    """The 100 small LFW face crops shipped with scikit-image, as RGB (grey replicated)."""
    from skimage.data import lfw_subset

    grey = lfw_subset()[:100]  # [100, 25, 25] float in [0, 1]; the next 100 are non-faces
    out = np.empty((len(grey), size, size, 3), dtype=np.uint8)
    for i, face in enumerate(grey):
        image = Image.fromarray((face * 255).round().astype(np.uint8), mode="L")
        out[i] = _center_crop_resize(image, size)
    return out


def load_dataset(
    source: str, count: int, size: int, seed: int = 0, cache_dir: str | Path | None = None, start: int = 0
) -> np.ndarray:
    """Resolve a dataset name: ``avatars``, ``lfw``, or a path to a folder of images.

    ``start`` skips the first images (held-out data after a training set). ``lfw`` has 100 images, so
    it gives at most ``100 - start``.
    """
    if source == "avatars":
        return avatar_faces(count, seed=seed, size=size, cache_dir=cache_dir, start=start)
    if source == "lfw":
        return lfw_faces(size)[start : start + count]
    return image_folder(source, size=size, limit=count, cache_dir=cache_dir, start=start)


def image_grid(images: Sequence[np.ndarray] | np.ndarray, columns: int = 8, pad: int = 2) -> Image.Image:
    """Tile uint8 HWC images into one picture."""
    images = np.asarray(images)
    N, H, W, C = images.shape  # count, height, width, channels
    rows = (N + columns - 1) // columns
    canvas = np.full((rows * (H + pad) + pad, columns * (W + pad) + pad, C), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        canvas[y : y + H, x : x + W] = image
    return Image.fromarray(canvas)
