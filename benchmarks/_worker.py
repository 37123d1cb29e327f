"""One measurement in a process of its own: ``python benchmarks/_worker.py TASK ARGS OUT``.

Runs ``TASKS[TASK](**json.loads(ARGS))`` and writes its result (a JSON object) to ``OUT``
with the process's RSS high-water marks added. Started by ``_common.run_measured``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling _modules
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost / lightgbm load


def main(argv: list[str]) -> None:
    import _accuracy
    import _scale
    import _speed
    from _common import peak_rss_mb, write_json

    tasks = {**_accuracy.TASKS, **_speed.TASKS, **_scale.TASKS}
    name, args, out = argv[0], json.loads(argv[1]), Path(argv[2])
    result = tasks[name](**args)
    write_json(out, {**result, **peak_rss_mb()})


if __name__ == "__main__":
    main(sys.argv[1:])
