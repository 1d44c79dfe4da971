"""The edge of the service: request rows typed exactly as the lake types them, feedback bodies, and request ids that
bind a request's rows to the key that made it."""

import pytest
from pydantic import ValidationError

from mlray.serve.auth import hash_key
from mlray.serve.request_ids import FeedbackRefused, RequestIds
from mlray.serve.schema import feedback_model, label_text, request_columns, request_model, row_model
from mlray.spec import parse_spec

INPUTS = {"event_time": "2026-11-01T10:00:00Z", "amount": 12.5, "country": "DE"}


@pytest.fixture
def spec(starter_text):
    return parse_spec(starter_text)


@pytest.fixture
def predict_request(spec):
    columns, required = request_columns(spec)
    return request_model(row_model(spec.train_table, columns, required, max_string_length=20), max_rows=10)


def refused_fields(model, body: str) -> list[tuple]:
    with pytest.raises(ValidationError) as error:
        model.model_validate_json(body)
    return [(e["loc"], e["type"]) for e in error.value.errors()]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400])
def test_a_float_the_lake_cannot_hold_is_refused_naming_the_field(predict_request, literal):
    body = '{"row": {"event_time": "2026-11-01T10:00:00Z", "country": "DE", "amount": %s}}' % literal
    assert refused_fields(predict_request, body) == [(("row", "amount"), "finite_number")]


def test_an_integer_beyond_int64_is_refused_even_without_a_max(predict_request):
    beyond = 2**63
    body = '{"rows": [%s, %s]}' % ('{"event_time": "2026-11-01T10:00:00Z", "amount": 1, "country": "DE"}',
                                   '{"event_time": "2026-11-01T10:00:00Z", "amount": 1, "country": "DE", '
                                   f'"account_age_days": {beyond}}}')
    assert refused_fields(predict_request, body) == [(("rows", 1, "account_age_days"), "less_than_equal")]
    ok = predict_request.model_validate_json(body.replace(str(beyond), str(beyond - 1))).all_rows()
    assert ok[1]["account_age_days"] == 2**63 - 1


def test_the_spec_range_still_applies_and_strings_are_bounded(predict_request):
    assert refused_fields(predict_request, '{"row": {"event_time": "2026-11-01T10:00:00Z", "amount": -1, '
                                           '"country": "DE"}}') == [(("row", "amount"), "greater_than_equal")]
    long_country = '{"row": {"event_time": "2026-11-01T10:00:00Z", "amount": 1, "country": "%s"}}' % ("x" * 21)
    assert refused_fields(predict_request, long_country) == [(("row", "country"), "string_too_long")]


def test_feedback_takes_an_issued_id_a_row_within_the_limit_and_a_label_of_the_label_type(spec):
    feedback = feedback_model(spec)
    issued = RequestIds(b"k" * 32).issue(3, "")
    assert feedback.model_validate({"request_id": issued, "row": 2, "label": True}).label is True
    assert refused_fields(feedback, '{"request_id": "%s", "row": 2147483648, "label": true}' % issued) == [
        (("row",), "less_than")]
    assert refused_fields(feedback, '{"request_id": "%s", "label": "maybe"}' % issued) == [(("label",), "bool_parsing")]
    assert refused_fields(feedback, '{"request_id": "r1", "label": true}') == [(("request_id",), "string_pattern_mismatch")]
    assert label_text(True) == "true" and label_text(3) == "3" and label_text(0.25) == "0.25"


def test_a_request_id_proves_its_rows_and_its_key():
    ids, alice, bob = RequestIds(b"s" * 32), hash_key("alice-key"), hash_key("bob-key")
    issued = ids.issue(3, alice)
    nonce, rows, mac = issued.split("-")
    assert len(nonce) == 32 and rows == "3" and len(mac) == 16 and ids.issue(3, alice) != issued
    ids.check(issued, 2, alice)  # the row exists, the key is the one that asked
    with pytest.raises(FeedbackRefused) as error:
        ids.check(issued, 3, alice)
    assert error.value.status == 404 and "no row 3" in error.value.detail
    with pytest.raises(FeedbackRefused) as error:
        ids.check(issued, 0, bob, other_keys=(alice, bob))
    assert error.value.status == 403
    with pytest.raises(FeedbackRefused) as error:
        ids.check(f"{nonce}-30-{mac}", 10, alice)  # a row count changed by the caller breaks the MAC
    assert error.value.status == 404
    with pytest.raises(FeedbackRefused) as error:
        RequestIds(b"t" * 32).check(issued, 0, alice)  # another service's id
    assert error.value.status == 404
