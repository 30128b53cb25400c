# fedibridge container image: one image for every role (`serve --role web|worker|all`) and for the CLI.
#   docker build -t fedibridge .        (or let docker-compose.yml build it)
# Settings come from FEDIBRIDGE_* environment variables (see README); no fedibridge.toml is needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The process runs as this user. On first start it WRITES a bind-mounted keys/ directory (it generates
# keys/private.pem, mode 0600, and keys/admin-token), so that directory must belong to this uid:
#   mkdir -p keys && sudo chown 1000:1000 keys          (the default uid), or
#   docker build --build-arg UID=$(id -u) --build-arg GID=$(id -g) .   (your own uid owns ./keys)
# --non-unique: the ids may already exist in the image (UID=0 GID=0 builds a root-run image; 100 = users).
ARG UID=1000
ARG GID=1000
RUN groupadd --non-unique --gid "${GID}" fedibridge \
    && useradd --non-unique --uid "${UID}" --gid "${GID}" --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin fedibridge

# Only what the package needs; the source stays root-owned (read-only for the service user).
COPY pyproject.toml README.md /src/
COPY fedibridge /src/fedibridge
RUN pip install /src && rm -rf /src

WORKDIR /app
# keys/: the actor's RSA key pair and admin token (back it up!). data/: the SQLite database, when not on PostgreSQL.
RUN mkdir -p /app/keys /app/data && chown fedibridge:fedibridge /app /app/keys /app/data
USER fedibridge
VOLUME ["/app/keys", "/app/data"]

EXPOSE 8080
# slim images have no curl: ask /healthz with the standard library. Port and base path come from the same
# settings the server uses (FEDIBRIDGE_PORT, FEDIBRIDGE_BASE_URL's path). The worker role serves no HTTP:
# docker-compose.yml gives it its own check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.parse as p, urllib.request as r; from fedibridge import config; s = config.load(); r.urlopen('http://127.0.0.1:%d%s/healthz' % (s.port, p.urlsplit(s.base).path), timeout=4)"]

ENTRYPOINT ["fedibridge"]
CMD ["serve", "--host", "0.0.0.0"]
