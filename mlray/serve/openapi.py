"""The service's OpenAPI document with the request bodies it really takes.

The ingress validates raw bodies itself (models generated from the spec when a replica starts), so FastAPI cannot see
them; this adds them: predict takes exactly one of `row` and `rows` (a oneOf), feedback its model."""

from __future__ import annotations

import copy

from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def _not_null(prop: dict) -> dict:
    return next(s for s in prop["anyOf"] if s.get("type") != "null")


def with_request_bodies(document: dict, predict_request: type[BaseModel], feedback: type[BaseModel]) -> dict:
    """A copy of `document` whose POST /v1/predict and /v1/feedback name their JSON bodies."""
    document = copy.deepcopy(document)
    predict = predict_request.model_json_schema(ref_template=REF)
    labelled = feedback.model_json_schema(ref_template=REF)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for schema in (predict, labelled):
        components.update(schema.pop("$defs", {}))
    one_of = [{"type": "object", "additionalProperties": False, "required": [name],
               "properties": {name: _not_null(predict["properties"][name])}} for name in ("row", "rows")]
    components["PredictRequest"] = {"title": predict["title"], "oneOf": one_of}
    components["Feedback"] = labelled
    for path, name in (("/v1/predict", "PredictRequest"), ("/v1/feedback", "Feedback")):
        document["paths"][path]["post"]["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
    return document
