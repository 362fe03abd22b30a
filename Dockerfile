# speech-gateway image. Build: docker build -t speech-gateway .
# Run the local speech service: docker run -p 5000:5000 speech-gateway
# (the gateway's own `serve` command becomes the default once it exists.)

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY config ./config
COPY data/demo ./data/demo
RUN mkdir -p var && chown app:app var
USER app
ENV SPEECH_GATEWAY_EMULATOR__HOST=0.0.0.0
EXPOSE 5000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/ready', timeout=2)"
ENTRYPOINT ["speech-gateway"]
CMD ["emulate"]
