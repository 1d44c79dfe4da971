"""Retrain: land new files, train, gate, register, and start the rollout, which records its outcome in the incident.

    ray job submit --working-dir . -- python jobs/retrain.py --spec mlray.yaml [--incident ID]

The drift monitor submits the same code (`python -m mlray.retrain`) with the incident it opened. The job ends once
the challenger's rollout has started; the rollout controller closes the incident (promoted, rolled back, stopped).
Exit codes: 0 done (rollout started, first champion, or rejected by the gate), 2 user error.
"""

from mlray.entrypoint import exit_with
from mlray.retrain import main

if __name__ == "__main__":
    exit_with(main())
