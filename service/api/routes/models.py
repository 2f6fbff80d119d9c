"""The models route: which models this server serves, and what each one's images are."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RuntimeDep, TenantDep
from service.api.schemas import ClassifierInfo, ImageShape, ModelInfo, ModelList
from synthgen.core.package import ModelPackage

router = APIRouter(prefix="/v1")


def _classifier(package: ModelPackage) -> ClassifierInfo | None:
    entry = package.manifest.get("classifier")
    return ClassifierInfo(accuracy=dict(entry.get("accuracy") or {})) if entry else None


@router.get("/models", response_model=ModelList, tags=["models"])
async def list_models(runtime: RuntimeDep, tenant: TenantDep) -> ModelList:
    default = runtime.registry.default.package.ref
    return ModelList(
        models=[
            ModelInfo(
                name=m.package.name,
                version=m.package.version,
                sha256=m.package.sha256,
                latent_dim=m.package.latent_dim,
                image=ImageShape(**dict(zip(("height", "width", "channels"), m.package.image_shape, strict=True))),
                prior=m.package.manifest["prior"],
                default=m.package.ref == default,
                provider=m.provider,
                uniqueness_threshold=m.package.uniqueness_threshold,
                attributes={name: list(values) for name, values in m.package.attributes.values.items()},
                identity_attributes=list(m.package.attributes.identity),
                classifier=_classifier(m.package),
            )
            for m in runtime.registry.all()
        ]
    )
