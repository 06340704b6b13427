# The modeldeploy operator image: `docker build -t modeldeploy:0.1.0 .`
#
# Two stages on the same pinned base: the builder turns the source into a wheel and installs it
# with its runtime dependencies (no dev extras) into a virtualenv; the final stage copies only that
# virtualenv, so no source tree, pip cache or build tool ships. Every runtime dependency ships as
# a binary wheel (xgboost-cpu and scikit-learn bundle their own OpenMP), so no compiler is needed
# in either stage.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/modeldeploy
COPY pyproject.toml ./
COPY requirements/runtime.txt requirements/runtime.txt
COPY operator/ operator/
COPY training/ training/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/modeldeploy/bin/pip install --no-cache-dir --constraint requirements/runtime.txt \
        /wheels/modeldeploy-*.whl \
    && /opt/modeldeploy/bin/pip uninstall --yes pip
# The base's users plus a name for uid 65532: kopf names its identity after it
# (getpass.getuser()), which fails for a uid /etc/passwd does not know, as under Kubernetes
# (podman adds one by itself). Written here: the final stage runs nothing.
RUN mkdir /etc-final && cp /etc/passwd /etc/group /etc-final/ \
    && echo "modeldeploy:x:65532:65532:modeldeploy:/tmp:/usr/sbin/nologin" >> /etc-final/passwd \
    && echo "modeldeploy:x:65532:" >> /etc-final/group

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modeldeploy" \
      org.opencontainers.image.description="GitOps delivery of bring-your-own XGBoost models to SageMaker" \
      org.opencontainers.image.licenses="Apache-2.0"
# The root filesystem is read-only in the cluster (pip compiled the bytecode at install time);
# HOME points at the writable /tmp the manifests mount.
ENV PATH=/opt/modeldeploy/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/modeldeploy /opt/modeldeploy
# A fixed non-root uid/gid (the "nonroot" convention), matching the manifests' runAsUser, with
# the name the builder gave it.
COPY --from=builder /etc-final/passwd /etc/passwd
COPY --from=builder /etc-final/group /etc/group
USER 65532:65532
WORKDIR /tmp
# Metrics on 8080 (MODELDEPLOY_METRICS_PORT, set by the chart), kopf's liveness probe on 8081.
EXPOSE 8080 8081
ENTRYPOINT ["modeldeploy", "run"]
CMD ["--liveness=http://0.0.0.0:8081/healthz"]
