"""Request and response schemas of the v1 API. Limits live here, so OpenAPI shows them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.settings import default
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_QUALITY, ImageFormat
from synthgen.core.jobs import JobStatus, Priority
from synthgen.core.latents import MAX_SEED

MAX_COUNT = default("max_count")  # the schema's bound; a server's SYNTHGEN_MAX_COUNT may be lower


class JobRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"count": 1000, "seed": 42, "format": "png", "truncation": 2.0}]},
    )

    model: str | None = Field(
        default=None, max_length=128, description="Model name, or name@version; the default model when omitted."
    )
    count: int = Field(ge=1, le=MAX_COUNT, description="Number of images (the server's max_count may be lower).")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=MAX_SEED,
        description="Image i is a pure function of (model, seed, i, truncation). Random when omitted.",
    )
    truncation: float | None = Field(
        default=None, gt=0, le=100, allow_inf_nan=False, description="Every latent coordinate lies within +-truncation sigma."
    )
    format: ImageFormat = DEFAULT_FORMAT
    quality: int = Field(default=DEFAULT_QUALITY, ge=1, le=100, description="JPEG and WebP quality.")
    priority: Priority | None = Field(default=None, description="Default: interactive for small jobs, else bulk.")
    unique: bool = Field(
        default=False,
        description="No two images closer than the model's uniqueness threshold (RMS distance of 16x16 thumbnails); "
        "rejected candidates are replaced deterministically and each image's JSON records its source_index.",
    )
    novel: bool = Field(
        default=False,
        description="Privacy guard: reject candidates closer than the model's threshold to any training image "
        "(RMS distance of 8x8 thumbnails); needs a model package with a training index.",
    )
    collection: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Keep uniqueness across all jobs of this collection for this key (implies unique).",
    )


class InterpolateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"from_seed": 1, "to_seed": 2, "steps": 9, "method": "slerp", "format": "png"}]},
    )

    model: str | None = Field(default=None, max_length=128)
    from_seed: int = Field(ge=0, le=MAX_SEED)
    to_seed: int = Field(ge=0, le=MAX_SEED)
    from_index: int = Field(default=0, ge=0, le=MAX_SEED, description="Which image of from_seed to start at")
    to_index: int = Field(default=0, ge=0, le=MAX_SEED, description="Which image of to_seed to end at")
    steps: int = Field(default=9, ge=2, le=256, description="Images along the path, both ends included")
    method: Literal["slerp", "lerp"] = "slerp"
    truncation: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    format: ImageFormat = DEFAULT_FORMAT
    quality: int = Field(default=DEFAULT_QUALITY, ge=1, le=100)


class JobLinks(BaseModel):
    self: str
    result: str


class JobCreated(BaseModel):
    id: str
    status: JobStatus
    model: str
    count: int
    seed: int
    links: JobLinks


class JobStatusResponse(BaseModel):
    id: str
    status: JobStatus
    model: str
    count: int
    done: int
    seed: int
    truncation: float | None
    format: ImageFormat
    priority: Priority
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    expires_at: float | None
    error: str | None


class ImageShape(BaseModel):
    height: int
    width: int
    channels: int


class ModelInfo(BaseModel):
    name: str
    version: str
    sha256: str
    latent_dim: int
    image: ImageShape
    prior: dict[str, object]
    default: bool
    provider: str
    uniqueness_threshold: float = Field(
        description="RMS distance between 16x16 thumbnails below which two faces count as the same"
    )


class ModelList(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable, snake_case.")
    message: str = Field(description="What was expected, and what was received.")
    details: dict[str, object] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
