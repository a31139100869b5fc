# syntax=docker/dockerfile:1
# One image for the daemon and the edge agent:
#   docker run -v /etc/gitopsd:/etc/gitopsd:ro -v gitopsd-state:/var/lib/gitopsd IMAGE
#   docker run -p 9101:9101 -v agent-state:/var/lib/gitopsd IMAGE agent \
#       --listen 0.0.0.0:9101 --name edge-a --region us-east --data-dir /var/lib/gitopsd/agent
# In a container, set [webhook] listen / [metrics] listen to 0.0.0.0:PORT (the defaults bind
# 127.0.0.1, unreachable from outside the container).
# No HEALTHCHECK: the port depends on the command and the config; probe GET /healthz on the
# metrics (daemon) or agent port from the orchestrator instead.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
COPY gitopsd ./gitopsd
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GITOPSD_STATE_DIR=/var/lib/gitopsd \
    HOME=/var/lib/gitopsd
# pygit2 and wasmtime ship manylinux wheels (libgit2, OpenSSL, the JIT inside): no compiler,
# no apt packages. The entry point lands in /usr/local/bin/gitopsd, as in the systemd units.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/*.whl \
    && groupadd --system --gid 10001 gitopsd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gitopsd \
        --no-create-home --shell /usr/sbin/nologin gitopsd \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/gitopsd \
    && install -d -m 0755 /etc/gitopsd
VOLUME ["/var/lib/gitopsd"]
# 9300 webhook receiver, 9400 daemon metrics, 9101 agent.
EXPOSE 9300 9400 9101
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/gitopsd
# SIGTERM (docker stop) finishes the current step and exits 0; SIGHUP reloads the config.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gitopsd"]
CMD ["run", "--config", "/etc/gitopsd/gitopsd.toml"]
