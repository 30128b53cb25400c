# fedibridge container image: one image for every role (`serve --role web|worker|all`) and for the CLI.
#   docker build -t fedibridge .        (or let docker-compose.yml build it)
# Settings come from FEDIBRIDGE_* environment variables (see README); no fedibridge.toml is needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The process runs as this unprivileged user. Its uid must be able to read a bind-mounted keys/ directory
# (the private key is mode 0600): build with `--build-arg UID=$(id -u)` if your host user is not 1000.
ARG UID=1000
ARG GID=1000
RUN groupadd --gid "${GID}" fedibridge \
    && useradd --uid "${UID}" --gid fedibridge --home-dir /app --no-create-home --shell /usr/sbin/nologin fedibridge

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
