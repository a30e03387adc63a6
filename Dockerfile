# The runstate image: one processor worker per container (docs/deployment.md). It also runs
# the other commands (`runstate topics ensure`, `runstate archive run`, ...): every role's
# extras are installed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY src ./src
RUN pip install -c constraints.txt '.[processor,s3,console]' \
    && groupadd --system --gid 10001 runstate \
    && useradd --system --uid 10001 --gid runstate --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin runstate \
    && mkdir -p /data \
    && chown runstate:runstate /data

# Not root: the worker needs nothing but its state volume and a port above 1024.
USER 10001:10001

# Listen on every interface of the container; tell the other workers where to forward queries
# with RUNSTATE_RUNTIME_ADVERTISED_URL (e.g. http://runstate-0.runstate:6066): without it a
# worker advertises http://<its host name>:6066.
# The health port (6067) serves /health from a process of its own, which answers while the
# worker's loop is busy: point probes there.
ENV RUNSTATE_STATE_DIR=/data \
    RUNSTATE_RUNTIME_WEB_HOST=0.0.0.0 \
    RUNSTATE_RUNTIME_WEB_PORT=6066 \
    RUNSTATE_RUNTIME_HEALTH_PORT=6067
VOLUME ["/data"]
EXPOSE 6066 6067

# Alive while the health port answers 200 (503: the worker's loop is stuck, or its process
# stands still); /health?ready=true is the readiness check (503 while partitions are assigned
# or restored). The start period covers a first restore.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RUNSTATE_RUNTIME_HEALTH_PORT', '6067') + '/health', timeout=2)"]

# SIGTERM stops the worker cleanly (it leaves the group, commits, closes the stores): give it
# a grace period longer than the session timeout (RUNSTATE_RUNTIME_SESSION_TIMEOUT_MS, 10 s).
STOPSIGNAL SIGTERM
CMD ["runstate", "processor", "run"]
