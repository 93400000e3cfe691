# syntax=docker/dockerfile:1
# Build a wheel in one stage, install it into a slim runtime in the next: no compiler, no pip cache,
# no source tree in the image. Runs as a non-root user with a read-only root filesystem; the state
# store lives on the /var/lib/ci-pipeline-exporter volume.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim AS base
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="ci-pipeline-exporter" \
      org.opencontainers.image.description="Prometheus exporter for GitHub Actions pipelines, build cache, tests and image sizes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/ci-pipeline-exporter/ci-pipeline-exporter"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CIPE_STATE__PATH=/var/lib/ci-pipeline-exporter/state.db
COPY requirements/runtime.lock /tmp/runtime.lock
COPY --from=build /wheels /wheels
# Dependencies exactly as locked (versions and hashes), then the exporter's own wheel.
RUN pip install --no-cache-dir --require-hashes -r /tmp/runtime.lock \
    && pip install --no-cache-dir --no-deps --no-index --find-links=/wheels "ci-pipeline-exporter==${VERSION}" \
    && rm -rf /wheels /tmp/runtime.lock \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin exporter \
    && mkdir -p /var/lib/ci-pipeline-exporter /etc/ci-pipeline-exporter \
    && chown 10001:10001 /var/lib/ci-pipeline-exporter
VOLUME ["/var/lib/ci-pipeline-exporter"]
USER 10001:10001
EXPOSE 9469
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9469/healthz', timeout=4)"]
ENTRYPOINT ["ci-pipeline-exporter"]
CMD ["serve", "--config", "/etc/ci-pipeline-exporter/config.yaml"]

# The quickstart's demo: the same image plus the simulators (never in the production image).
FROM base AS demo
COPY simulator /opt/ci-pipeline-exporter-demo/simulator
ENV PYTHONPATH=/opt/ci-pipeline-exporter-demo
ENTRYPOINT ["python", "-m", "simulator"]
CMD ["demo", "--listen", "0.0.0.0:9469"]

# The production image (the default target).
FROM base AS runtime
