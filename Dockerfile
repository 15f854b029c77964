# One image for every part of mlwarden: `mlwarden operator`, `mlwarden detector`,
# `mlwarden sidecar` (injected beside the model) and `mlwarden check`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
# Runs as an unprivileged user with a read-only root filesystem in the chart.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin mlwarden
USER 10001
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["mlwarden"]
CMD ["--help"]
