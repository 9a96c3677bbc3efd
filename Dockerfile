# syntax=docker/dockerfile:1
# The buildkit-operator image: the Python package and its pinned dependencies on
# python:3.11-slim, run as the unprivileged uid/gid 65532.
#
#   docker build -t buildkit-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) .
#
# The Helm chart (charts/buildkit-operator) runs it with a read-only root filesystem and a
# writable /tmp; it passes only arguments, the ENTRYPOINT being the command.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the package into a virtual environment --------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# The dependencies are pinned in pyproject.toml; only the package and its runtime
# dependencies are installed (no test or lint tools), compiled to bytecode here because the
# root filesystem is read-only at run time.
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN pip install /src \
    && buildkit-operator --version

# --- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="buildkit-operator" \
      org.opencontainers.image.description="A Kubernetes operator that runs BuildKit builders in a cluster, reachable over mutual TLS." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/buildkit-operator/buildkit-operator" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A named user for uid/gid 65532 (the "nonroot" convention), so that tools looking up the
# user or its home directory find one; Kubernetes runs the image as this uid. --no-log-init:
# no sparse lastlog/faillog entries for a high uid, which would bloat the layer.
RUN groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-log-init --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot

COPY --from=build /opt/venv /opt/venv

# USER: Kopf names itself after the login name (getpass.getuser), which fails for a uid with
# no passwd entry, as when a platform runs the image under an arbitrary uid.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/nonroot \
    USER=nonroot

USER 65532:65532
WORKDIR /home/nonroot

# Liveness (--liveness=http://0.0.0.0:8080/healthz) and metrics (--metrics-port=9090), as
# the chart runs it.
EXPOSE 8080 9090

ENTRYPOINT ["buildkit-operator"]
CMD ["run", "--all-namespaces"]
