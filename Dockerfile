# syntax=docker/dockerfile:1
# One image for every process: the entry point is the `beeoclock` CLI and the command picks
# the process (`write-api`, `read-api`, `relay`, `projector`, `migrate`); see compose.yaml.
# The `embedded` extra (dev-only servers) is deliberately not installed.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 beeoclock \
 && useradd --system --uid 10001 --gid beeoclock --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin beeoclock
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["beeoclock"]
CMD ["--help"]
