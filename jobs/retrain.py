"""`ray job submit` entrypoint for retraining: land new files, train, gate, register, roll out, record the outcome.

    ray job submit --working-dir . -- python jobs/retrain.py --spec mlray.yaml [--incident ID]

The drift monitor submits the same code (`python -m mlray.retrain`) with the incident it opened.
Exit codes: 0 an outcome was reached, 1 the rollout did not finish in time, 2 user error.
"""

import sys

from mlray.retrain import main

if __name__ == "__main__":
    sys.exit(main())
