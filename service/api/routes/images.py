"""Images computed on request, without the queue: one image by (seed, index), and interpolations."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from service.api.deps import RuntimeDep, TenantDep
from service.api.schemas import InterpolateRequest
from service.engine.registry import LoadedModel
from service.engine.rendering import interpolation_latents, strip_image
from synthgen.core.errors import InvalidRequest, NotFound
from synthgen.core.images import EXTENSIONS, FORMAT_BY_EXTENSION, MEDIA_TYPES, encode_image
from synthgen.core.latents import MAX_SEED
from synthgen.core.webdataset import TAR_END, sample_meta, tar_sample

router = APIRouter(prefix="/v1")
_IMAGE_NAME = re.compile(r"^(\d{1,20})\.(" + "|".join(FORMAT_BY_EXTENSION) + r")$")
_IMAGE_TYPES: dict[int | str, dict[str, Any]] = {200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "Images"}}


@router.get("/images/{filename}", tags=["images"], responses={**_IMAGE_TYPES, 304: {"description": "Not modified"}})
async def get_image(
    filename: str,
    request: Request,
    runtime: RuntimeDep,
    tenant: TenantDep,
    model: Annotated[str | None, Query(max_length=128)] = None,
    index: Annotated[int, Query(ge=0, le=MAX_SEED)] = 0,
    truncation: Annotated[float | None, Query(gt=0, le=100, allow_inf_nan=False)] = None,
    quality: Annotated[int, Query(ge=1, le=100)] = 90,
) -> Response:
    """One image; deterministic, so it carries a strong ETag and may be cached forever."""
    match = _IMAGE_NAME.match(filename)
    if not match:
        raise NotFound(
            f"expected /v1/images/{{seed}}.{{png|jpg|webp|npy}} with seed an integer, got {filename[:80]!r}",
            {"filename": filename[:80]},
        )
    seed, fmt = int(match.group(1)), FORMAT_BY_EXTENSION[match.group(2)]
    if seed > MAX_SEED:
        raise InvalidRequest(f"seed must be in [0, 2**63-1], got {seed}", {"field": "seed"})
    loaded = runtime.registry.get(model)
    identity = f"{loaded.package.sha256}:{seed}:{index}:{truncation!r}:{fmt}:{quality}"
    etag = '"' + hashlib.sha256(identity.encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    image = (await runtime.decode_images(loaded, seed, np.array([index], dtype=np.int64), truncation))[0]
    data = await _encode(encode_image, image, fmt, quality, runtime.settings.png_compress_level)
    return Response(data, media_type=MEDIA_TYPES[fmt], headers=headers)


async def _encode(encoder: Callable[..., bytes], images: np.ndarray, fmt: str, *args: Any) -> bytes:
    """npy is a header and a copy of the pixels: done in place, since the hop to a worker thread and back costs
    more than the copy (a quarter of the api's CPU under 32 clients of single images); the others in a thread."""
    if fmt == "npy":
        return encoder(images, fmt, *args)
    return await run_in_threadpool(encoder, images, fmt, *args)


def _strip(images: np.ndarray, fmt: str, quality: int, level: int) -> bytes:
    if fmt == "npy":
        return encode_image(images, "npy")  # the stack itself, [steps, H, W, C]
    return encode_image(strip_image(images), fmt, quality, level)


def _tar(model: LoadedModel, body: InterpolateRequest, z: np.ndarray, t: np.ndarray, images: np.ndarray, level: int) -> bytes:
    pkg, parts = model.package, []
    latents, _ = model.split(z)
    labels = model.labels(z)
    for i, (latent, image, attributes) in enumerate(zip(latents, images, labels, strict=True)):
        meta = sample_meta(i, body.from_seed, latent, pkg.ref, pkg.sha256, body.truncation, attributes)
        meta.update(t=float(t[i]), method=body.method, to_seed=body.to_seed, from_index=body.from_index, to_index=body.to_index)
        parts.append(tar_sample(i, EXTENSIONS[body.format], encode_image(image, body.format, body.quality, level), meta))
    return b"".join(parts) + TAR_END


@router.post(
    "/interpolate",
    tags=["images"],
    responses={
        200: {"content": {"application/x-tar": {}, **{t: {} for t in MEDIA_TYPES.values()}}, "description": "A tar, or one strip"}
    },
)
async def interpolate(
    body: InterpolateRequest,
    runtime: RuntimeDep,
    tenant: TenantDep,
    layout: Annotated[
        Literal["tar", "strip"], Query(description="tar: one member per step; strip: one horizontal image")
    ] = "tar",
) -> Response:
    """Walk from one face to another through latent space (slerp keeps the path at the prior's typical radius)."""
    model = runtime.registry.get(body.model)
    ends = ((body.from_seed, body.from_index), (body.to_seed, body.to_index))
    z, t = interpolation_latents(model, ends, body.steps, body.method, body.truncation)
    images = await runtime.decode_latents(model, z)
    level = runtime.settings.png_compress_level
    if layout == "strip":
        data = await _encode(_strip, images, body.format, body.quality, level)
        return Response(data, media_type=MEDIA_TYPES[body.format])
    data = await run_in_threadpool(_tar, model, body, z, t, images, level)
    return Response(data, media_type="application/x-tar")
