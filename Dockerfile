# Two images.
#
# `docker build --target sidecar -t mlwarden/mlwarden-sidecar:VERSION .`: the slim image the
# operator injects beside every model (OperatorSettings.sidecar_image), with only what
# `mlwarden sidecar` needs (requirements-sidecar.txt: no numpy, scipy, pyarrow, matplotlib,
# kopf or kubernetes). Any other subcommand in it stops with a message naming what is missing.
#
# `docker build -t mlwarden/mlwarden:VERSION .` (the last stage, the default): every part of
# mlwarden, `mlwarden operator`, `mlwarden detector`, `mlwarden check`, and the sidecar too.
#
# The sidecar's forwarding path is compiled with mypyc in its build stage
# (tools/build_native.py; a C compiler and mypy there, neither in the image): `mlwarden_sidecar_info`
# says `forwarder="native"`. The build fails rather than ship it interpreted by accident.
FROM python:3.11-slim AS build-sidecar
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements-sidecar.txt pyproject.toml README.md ./
COPY src ./src
COPY tools/build_native.py ./tools/
# mypy pinned: the version the project's lint runs, so a new release cannot fail the image.
RUN pip install --no-cache-dir -r requirements-sidecar.txt mypy==2.4.1 \
 && python tools/build_native.py --force --require \
 && pip install --no-cache-dir --prefix=/install -r requirements-sidecar.txt \
 && pip install --no-cache-dir --prefix=/install --no-deps . \
 && cp -r src/mlwarden/sidecar/_native /install/lib/python3.11/site-packages/mlwarden/sidecar/

FROM python:3.11-slim AS sidecar
COPY --from=build-sidecar /install /usr/local
# The compiled forwarding path is there and is the one the sidecar will run.
RUN python -c "from mlwarden.sidecar.native import forward_module as f; \
kind = f()[1]; assert kind.startswith('native'), kind"
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
