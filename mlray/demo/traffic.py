"""Live traffic for the demo: a background thread posting fresh synthetic transactions to `/v1/predict` and, as a
bank would days later, each request's true label for its first row to `/v1/feedback`."""

from __future__ import annotations

import json
import threading
from collections import Counter

import numpy as np
import requests

from mlray.lake.synthetic import Shift, generate_transactions


class LabelledTraffic:
    """Requests of `rows_per_request` rows from one thread while the `with` block lasts (or until `stop()`).

    `versions` counts the answering model version of each request; `failures` the requests not answered 200;
    `last_error` says why the last one failed."""

    def __init__(self, url: str, key: str, shift: Shift = Shift(), rows_per_request: int = 10, pause_s: float = 0.05,
                 label_column: str = "is_fraud", seed: int = 1000):
        self.url, self.shift, self.rows, self.pause_s = url.rstrip("/"), shift, rows_per_request, pause_s
        self.label_column, self.seed = label_column, seed
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {key}", "content-type": "application/json"})
        self.versions: Counter[str] = Counter()
        self.answered: list[str] = []  # the answering version of each request, in order
        self.failures, self.last_error = 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlray-demo-traffic", daemon=True)

    @property
    def sent(self) -> int:
        return len(self.answered) + self.failures

    def send_one(self) -> None:
        self.seed += 1
        table = generate_transactions(self.rows, seed=self.seed, shift=self.shift, id_prefix=f"live{self.seed}")
        # in no particular order: the generator sorts by event time (a model reading the hour would see seasonality)
        table = table.take(np.random.default_rng(self.seed).permutation(self.rows))
        rows = json.loads(table.drop_columns([self.label_column]).to_pandas().to_json(orient="records",
                                                                                      date_format="iso"))
        try:
            response = self.session.post(f"{self.url}/v1/predict", data=json.dumps({"rows": rows}), timeout=30)
            if response.status_code != 200:
                self._failed(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            body = response.json()
            feedback = {"request_id": body["request_id"], "row": 0,
                        "label": table.column(self.label_column)[0].as_py()}
            self.session.post(f"{self.url}/v1/feedback", data=json.dumps(feedback), timeout=30)
        except requests.RequestException as exc:
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        self.versions[body["model_version"]] += 1
        self.answered.append(body["model_version"])

    def _failed(self, why: str) -> None:
        self.failures += 1
        self.last_error = why

    def _run(self) -> None:
        while not self._stop.is_set():
            self.send_one()
            self._stop.wait(self.pause_s)

    def start(self) -> "LabelledTraffic":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> "LabelledTraffic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
