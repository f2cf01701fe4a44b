# syntax=docker/dockerfile:1
# runpod-monitor: the daemon in a small image.
#   docker build -t runpod-monitor .
#   docker run -e RUNPOD_API_KEY -p 127.0.0.1:9108:9108 runpod-monitor
#   docker run -p 127.0.0.1:9108:9108 runpod-monitor demo --host 0.0.0.0   # no account needed
# deploy/compose.yaml runs it beside Prometheus, Alertmanager and Grafana (docs/deploy.md).

# --- build: the project's wheel and the wheels of its dependencies ---------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY rules ./rules
COPY model ./model
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the wheels installed, nothing else ---------------------------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="runpod-monitor" \
      org.opencontainers.image.description="Diagnoses, metrics and alerts for RunPod Serverless" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RUNPOD_MONITOR_LISTEN=0.0.0.0:9108

# The wheels are bind-mounted from the build stage, so they never land in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/runpod_monitor-*.whl

RUN groupadd --system --gid 10001 runpod-monitor \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/runpod-monitor --shell /usr/sbin/nologin runpod-monitor \
    && mkdir -p /etc/runpod-monitor /var/lib/runpod-monitor \
    && chown runpod-monitor:runpod-monitor /var/lib/runpod-monitor

COPY deploy/config.docker.yaml /etc/runpod-monitor/config.yaml

USER 10001:10001
WORKDIR /var/lib/runpod-monitor
VOLUME ["/etc/runpod-monitor", "/var/lib/runpod-monitor"]
EXPOSE 9108

# /healthz needs no credentials; it answers 503 when no cycle completed for 3 intervals.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('RUNPOD_MONITOR_LISTEN', '0.0.0.0:9108').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

ENTRYPOINT ["runpod-monitor"]
CMD ["run", "--config", "/etc/runpod-monitor/config.yaml"]
