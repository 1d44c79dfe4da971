"""Retrain: land new files, train, gate, register, roll out and record the outcome in the incident.

    ray job submit --working-dir . -- python jobs/retrain.py --spec mlray.yaml [--incident ID]

The drift monitor submits the same code (`python -m mlray.retrain`) with the incident it opened.
Exit codes: 0 an outcome was reached (promoted, rolled back or rejected), 1 the rollout did not finish in time,
2 user error.
"""

from mlray.entrypoint import exit_with
from mlray.retrain import main

if __name__ == "__main__":
    exit_with(main())
