"""Served traffic written the way the ingress writes it (its own `InferenceLog` and `LabelLog`), scored by the real
champion package: the monitor tests feed the log at a pace no HTTP client reaches on two cores."""

import uuid

import numpy as np
import pyarrow as pa

from mlray import dataplane
from mlray.lake.synthetic import Shift, generate_transactions
from mlray.registry.models import Registry
from mlray.registry.package import load_package, predict_frame
from mlray.serve.logbook import InferenceLog, LabelLog, create_tables, log_schema


class Traffic:
    def __init__(self, spec):
        self.spec = spec
        self.lake = dataplane.lake_of(spec)
        create_tables(spec, self.lake)
        self.version = Registry(spec).version_of("champion")
        self.package = load_package(Registry(spec).uri(self.version))
        self.log = InferenceLog(self.lake, spec.serve.inference_log_table, log_schema(spec))
        self.labels = LabelLog(self.lake, spec.serve.labels_table)

    def send(self, rows: int, seed: int, shift: Shift = Shift(), per_call: int = 50, labelled: float = 0.0) -> int:
        """Score `rows` fresh transactions in calls of `per_call` rows, log them in one flush, and send the true label
        of the first `labelled` share of each call's rows; returns the rows logged."""
        table = generate_transactions(rows, seed=seed, shift=shift, id_prefix=f"live{seed}")
        # in no particular order: the generator sorts by event time, and a model that reads the hour or weekday
        # scores a run of neighbouring rows differently from the whole month (seasonality, not drift)
        table = table.take(np.random.default_rng(seed).permutation(rows))
        label_column = self.spec.data.label_column
        truth = table.column(label_column).to_pylist()
        inputs = table.set_column(table.schema.get_field_index(label_column), label_column,
                                  pa.nulls(rows, table.schema.field(label_column).type))
        answers = predict_frame(self.package.net, self.package.config, self.package.fitted, inputs).to_dict("records")
        for start in range(0, rows, per_call):
            request_id = uuid.uuid4().hex
            call = inputs.slice(start, per_call)
            self.log.record(request_id, self.version, call.to_pylist(), answers[start:start + per_call], latency_ms=2.0)
            for row in range(int(call.num_rows * labelled)):
                self.labels.add(request_id, row, truth[start + row])
        self.labels.flush()
        return self.log.flush()
