"""The models route: which models this server serves, and what each one's images are."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RuntimeDep, TenantDep
from service.api.schemas import ImageShape, ModelInfo, ModelList

router = APIRouter(prefix="/v1")


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
            )
            for m in runtime.registry.all()
        ]
    )
