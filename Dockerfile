# speech-gateway image: the gateway (`serve`) by default, any other sub-command on request.
#
#   docker build -t speech-gateway .
#   docker run -p 8080:8080 speech-gateway                  # the gateway, config/gateway.toml
#   docker run -p 5000:5000 --no-healthcheck speech-gateway emulate   # the speech emulator
#     (the HEALTHCHECK below asks the gateway's port; the emulator answers /ready on 5000)
#
# Your own settings: mount a TOML file and point SPEECH_GATEWAY_CONFIG at it, or override
# single settings with SPEECH_GATEWAY_* variables. Secrets (backend keys, the Redis
# password, the pseudonym key) come from the environment or mounted files, never the image.
# `docker stop` sends SIGTERM: the gateway drains (gateway.drain.grace_s, 30 s by default,
# then 1012 to what is left), so give it time: `docker stop -t 60` (docs/observability.md).
# tests/test_dockerfile.py checks this file and runs its commands without Docker.

# -- build: wheels of the project and of every dependency ----------------------------------
# Exactly the versions of the lock files (requirements/, made by scripts/update-deps), their
# hashes checked; the project's own wheel is built with the locked setuptools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements ./requirements
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --require-hashes -r requirements/build.txt \
    && pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r requirements/runtime.txt \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

# -- run: the wheels installed, no build tools, a non-root user ----------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 --user-group app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY config ./config
COPY data/demo ./data/demo
# The example config's canary set (its manifest points into data/demo).
COPY data/canary ./data/canary
# The example config's term list and synonyms for the error analysis.
COPY data/lexicon ./data/lexicon
# Outcomes, the experiments' state, the pseudonym key and the journal go to var/: mount a
# volume there to keep them across containers.
RUN mkdir -p var && chown 10001:10001 var
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENV SPEECH_GATEWAY_CONFIG=/app/config/gateway.toml \
    SPEECH_GATEWAY_GATEWAY__HOST=0.0.0.0 \
    SPEECH_GATEWAY_EMULATOR__HOST=0.0.0.0
EXPOSE 8080 5000
STOPSIGNAL SIGTERM
# Liveness only (/healthz): readiness (/readyz) also fails while the gateway drains (and,
# with gateway.ready_requires_redis, while Redis is away), and an orchestrator must not
# restart a replica for that.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SPEECH_GATEWAY_GATEWAY__PORT', '8080'), timeout=2)"
ENTRYPOINT ["speech-gateway"]
# One gateway process: the example configuration's stores (the outcome file, the state file)
# belong to one process. With the Redis stores, run one process per core in one container
# with `serve --workers auto` (or a count: `auto` sees the cpuset, not a CPU quota), or
# keep one per container and add replicas (docs/operations.md, "Workers").
CMD ["serve", "--workers", "1"]
