# The demo agent for docker-compose.yml: looplet with its telemetry extras, nothing else.
# Built from the repository root (compose: context ".", dockerfile exporters/demo-agent.Dockerfile);
# exporters/demo-agent.Dockerfile.dockerignore keeps the build context to what is copied below.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY looplet ./looplet
RUN pip install ".[otel,prometheus,logs]" \
 && useradd --system --create-home --uid 10001 looplet \
 && mkdir -p /var/log/looplet && chown looplet /var/log/looplet

# The named volume mounted at /var/log/looplet starts with this ownership, so the agent can write its log.
WORKDIR /home/looplet
USER looplet
EXPOSE 9464
ENTRYPOINT ["python", "-m", "looplet"]
CMD ["demo", "--runs=0", "--quiet"]
