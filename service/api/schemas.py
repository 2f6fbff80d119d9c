"""Request and response schemas of the v1 API. Limits live here, so OpenAPI shows them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.settings import default
from synthgen.core.crowd import DEFAULT_VARIATION
from synthgen.core.images import DEFAULT_FORMAT, DEFAULT_QUALITY, ImageFormat
from synthgen.core.jobs import JobStatus, Priority
from synthgen.core.latents import MAX_SEED

MAX_COUNT = default("max_count")  # the schema's bound; a server's SYNTHGEN_MAX_COUNT may be lower
MAX_ATTRIBUTES = 64  # names in one request's attributes or distribution (a model has a dozen)
MAX_VALUES = 256  # values of one attribute in a distribution

AttributeName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
AttributeValue = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Share = Annotated[float, Field(allow_inf_nan=False)]  # [0, 1] is checked with the model: a 400 naming the value


class JobRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"count": 1000, "seed": 42, "format": "png", "truncation": 2.0},
                {
                    "count": 1000,
                    "seed": 7,
                    "attributes": {"glasses": "none"},
                    "distribution": {"skin_color": {"light": 0.25, "brown": 0.25, "dark_brown": 0.25, "black": 0.25}},
                },
                {"identities": 100, "per_identity": 20, "seed": 7, "distribution": {"skin_color": {"light": 0.5, "black": 0.5}}},
            ]
        },
    )

    model: str | None = Field(
        default=None, max_length=128, description="Model name, or name@version; the default model when omitted."
    )
    count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="Number of images (the server's max_count may be lower). Required, except with identities and "
        "per_identity: then it may be omitted, and if given must equal identities x per_identity.",
    )
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
    attributes: dict[AttributeName, AttributeValue] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="{name: value}: every image has these attribute values (a conditional model's names and values, "
        "listed by GET /v1/models). Attributes not named are drawn from the training labels' distribution, from "
        "(seed, index).",
        examples=[{"glasses": "none", "hair_color": "black"}],
    )
    distribution: dict[AttributeName, dict[AttributeValue, Share]] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="{name: {value: share}}, shares summing to 1: each value gets exactly its share of count "
        "(largest remainder), assigned by index, so the same request gives the same images. In an identity job an "
        "identity attribute's shares count identities. A name may not be in attributes too.",
        examples=[{"skin_color": {"light": 0.5, "black": 0.5}}],
    )
    identities: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="Number of identities (with per_identity): image i belongs to identity i // per_identity; within "
        "an identity the identity attributes and the identity code stay fixed, the rest varies.",
    )
    per_identity: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="Images of each identity.")
    variation: float = Field(
        default=DEFAULT_VARIATION,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Identity jobs: latent = sqrt(1 - v^2) * identity code + v * the image's own draw. 0: every image "
        "of an identity has the same latent; 1: independent latents.",
    )
    labels: bool = Field(
        default=True,
        description="The model's attribute classifier labels every image: predicted in each image's JSON and the "
        "predicted histograms of the card. false: no classifier runs (raw bulk throughput); the images are the same.",
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
    card: str = Field(description="The job's dataset card (markdown), once it has succeeded.")


class CrowdView(BaseModel):
    """Who is in a job, as it was asked for (the fields of the request)."""

    attributes: dict[str, str] = Field(default_factory=dict, description="The request's fixed attributes ({} when none).")
    distribution: dict[str, dict[str, float]] = Field(default_factory=dict, description="The request's quotas ({} when none).")
    identities: int | None = Field(default=None, description="Identities of an identity job (null otherwise).")
    per_identity: int | None = Field(default=None, description="Images per identity of an identity job (null otherwise).")
    variation: float | None = Field(default=None, description="An identity job's variation (null otherwise).")


class JobCreated(CrowdView):
    id: str
    status: JobStatus
    model: str
    count: int
    seed: int
    links: JobLinks
    labels: bool = Field(default=True, description="Whether the classifier labels the job's images (the request's labels).")


class JobStatusResponse(CrowdView):
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
    labels: bool = Field(default=True, description="Whether the classifier labels the job's images (the request's labels).")


class ImageShape(BaseModel):
    height: int
    width: int
    channels: int


class ClassifierInfo(BaseModel):
    accuracy: dict[str, float] = Field(description="Per attribute, the fraction of held-out real renders it labels right.")


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
    attributes: dict[str, list[str]] = Field(
        description="{name: [values]} a job may ask for, in the decoder's order; {} for an unconditional model.",
        examples=[{"skin_color": ["light", "brown", "black"], "glasses": ["none", "glasses", "sunglasses"]}],
    )
    identity_attributes: list[str] = Field(
        description="The attributes that stay fixed within an identity of an identity job.",
        examples=[["skin_color", "hair_color", "top", "facial_hair", "accessory"]],
    )
    classifier: ClassifierInfo | None = Field(
        description="The package's attribute classifier, which labels every image (predicted); null without one."
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
