# The mlspy Delivery Service as a container image.
#
#   docker build -t mlspy-ds .
#   docker run -p 127.0.0.1:8080:8080 -v mlspy-data:/data mlspy-ds
#
# Configuration comes from MLSPY_* environment variables (docs/deploy.md has them all), or a
# TOML file mounted and named by MLSPY_CONFIG. The server listens on every interface of the
# container (0.0.0.0): publish the port to a TLS-terminating proxy, or set MLSPY_TLS_CERT and
# MLSPY_TLS_KEY.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install '.[postgres]' && rm -rf /src

# An unprivileged user owns the data directory (the SQLite database, when not PostgreSQL).
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin mlspy \
    && mkdir -p /data && chown mlspy:mlspy /data
USER mlspy
WORKDIR /data
VOLUME ["/data"]

ENV MLSPY_DATABASE=/data/ds.sqlite \
    MLSPY_PORT=8080 \
    MLSPY_LOG_FORMAT=json

EXPOSE 8080

# Liveness: /healthz answers while the process serves (/readyz also checks the database;
# orchestrators use it to route traffic). No curl in the slim image: Python asks.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('MLSPY_PORT', '8080') + '/healthz', timeout=4)"]

ENTRYPOINT ["mlspy"]
CMD ["serve", "--host", "0.0.0.0"]
