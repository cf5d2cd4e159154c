# The gateway as a container: slim Python, non-root, health-checked.
# Build: docker build -t gateway .   Run: docs/operations.md (compose.yaml, deploy/kubernetes).
# tests/integration/test_image.py stages exactly what is COPYed here and installs it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_CONFIG=/etc/gateway/gateway.toml \
    GATEWAY_SERVER_HOST=0.0.0.0 \
    GATEWAY_SERVER_PORT=8080 \
    GATEWAY_SERVER_WORKERS=2

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# the Lua scripts and the simulator the demo starts live inside gateway/
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home gateway

USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_SERVER_PORT', '8080'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]
