"""Create the MLflow experiment of an env on the tracking server before the first training.

    SALESFLOW_ENV=prod python deploy/docker/ensure_experiment.py

Why: training creates a missing experiment with ``artifact_location`` under
``paths.local_dir`` (a file: URI on the host that trains). In containers that host is the
worker, so the API and the dashboard (other containers) could not load the models. Created
here first, with no artifact location, the experiment gets the server's proxied store
(``mlflow-artifacts:/``, i.e. ``--artifacts-destination``) and every later run logs there.
An existing experiment is left as it is. Settings load as every salesflow command does.
"""

from __future__ import annotations

import sys

from salesflow.config.settings import load_settings
from salesflow.modelling.registry import client, ensure_experiment


def main() -> int:
    settings = load_settings()
    uri, name = settings.tracking_uri, settings.mlflow.experiment
    exp_id = ensure_experiment(uri, name, None)
    location = client(uri).get_experiment(exp_id).artifact_location
    print(f"MLflow experiment {name!r}: id {exp_id}, artifacts at {location}")
    if location.startswith("file:"):
        print(
            f"warning: {name!r} stores artifacts in local files ({location}); other "
            "containers cannot read them. Rename mlflow.experiment or recreate it.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
