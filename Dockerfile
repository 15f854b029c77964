# Two images.
#
# `docker build --target sidecar -t mlwarden/mlwarden-sidecar:VERSION .`: the slim image the
# operator injects beside every model (OperatorSettings.sidecar_image), with only what
# `mlwarden sidecar` needs (requirements-sidecar.txt: no numpy, scipy, pyarrow, matplotlib,
# kopf or kubernetes). Any other subcommand in it stops with a message naming what is missing.
#
# `docker build -t mlwarden/mlwarden:VERSION .` (the last stage, the default): every part of
# mlwarden, `mlwarden operator`, `mlwarden detector`, `mlwarden check`, and the sidecar too.
FROM python:3.11-slim AS build-sidecar
WORKDIR /src
COPY requirements-sidecar.txt pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --prefix=/install -r requirements-sidecar.txt \
 && pip install --no-cache-dir --prefix=/install --no-deps .

FROM python:3.11-slim AS sidecar
COPY --from=build-sidecar /install /usr/local
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin mlwarden
USER 10001
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["mlwarden"]
CMD ["sidecar", "--help"]

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
