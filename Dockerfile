# salesflow: one image for every role; the role is the command.
#
#   docker build -t salesflow:local .
#   docker run --rm salesflow:local salesflow -h
#
# Roles (compose.yaml and deploy/k8s/ set the command and the environment):
#   salesflow serve --host 0.0.0.0                  REST API on :8000 (the default command)
#   salesflow dashboard --host 0.0.0.0              Streamlit dashboard on :8501
#   prefect worker start --pool salesflow-pool      runs the deployed flows (process worker)
#   prefect server start --host 0.0.0.0             Prefect API + UI on :4200
#   mlflow server --host 0.0.0.0 ...                MLflow tracking/registry on :5000
#   salesflow train | forecast | monitor | retrain  one-off jobs
#
# No secrets here: database URLs, passwords and tokens come from the runtime environment.
FROM python:3.11-slim-bookworm

# tini as PID 1 forwards signals to the role's process (Python ignores SIGTERM as PID 1
# when it has no handler) and reaps the flow-run subprocesses of the worker.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# OMP_WAIT_POLICY: XGBoost's OpenMP threads spin while idle (far slower fits on a busy
# host). The telemetry switches: no phoning home from the services or the flows.
# SALESFLOW_HOME: the checkout the flows' pull step changes to (deployments/prefect.yaml).
# SALESFLOW_ENV=prod: configs/prod.yaml requires the warehouse URL and the MLflow tracking
# URI from the environment, so a container started without them fails at once.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_WAIT_POLICY=PASSIVE \
    MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    SALESFLOW_HOME=/app \
    SALESFLOW_ENV=prod

WORKDIR /app

# Dependencies first (a layer that changes only with the lock): every runtime package
# pinned by requirements/prod.txt, generated from the tested venv by
# requirements/freeze_prod.py; tests/test_containers.py checks it against pyproject.toml.
COPY requirements/prod.txt requirements/prod.txt
RUN pip install -r requirements/prod.txt

# The code. An editable install: settings find configs/ next to the package
# (salesflow/config/settings.py), and the flows load from /app/flows.
COPY pyproject.toml README.md ./
COPY salesflow salesflow
COPY features features
COPY tasks tasks
COPY flows flows
COPY configs configs
COPY deployments deployments
COPY deploy/docker deploy/docker
# Bytecode compiled now: the services never write to /app (PYTHONDONTWRITEBYTECODE, and a
# read-only root filesystem in deploy/k8s/).
RUN pip install --no-deps -e . \
    && pip check \
    && python -m compileall -q salesflow features tasks flows

# A non-root user. The code stays root-owned (read-only for the services); the local state
# folder (monitor reports) and the MLflow artifact store are the writable places.
RUN useradd --create-home --uid 10001 --user-group salesflow \
    && mkdir -p /app/data/local /mlartifacts \
    && chown -R salesflow:salesflow /app/data /mlartifacts
USER 10001:10001

EXPOSE 8000 8501 4200 5000 8080

# The default command's check; compose.yaml sets the other roles' (the worker's :8080,
# Prefect's /api/health, MLflow's /health, the dashboard's /_stcore/health).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/app/deploy/docker/healthcheck.py", "http://127.0.0.1:8000/health"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["salesflow", "serve", "--host", "0.0.0.0", "--port", "8000"]
