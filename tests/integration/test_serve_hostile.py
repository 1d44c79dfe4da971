"""Serving under hostile and careless input, over real HTTP on 127.0.0.1: a bad value is refused at the edge naming its
field and hurts no other request; every answered request reaches the inference log; feedback belongs to its caller.
Each test prints what it counted."""

import asyncio
import json
import urllib.error
import urllib.request

import aiohttp
import pytest
import requests
from serving import KEY, as_json_rows, labels_flushed, post, raw_rows, wait_until

from mlray import dataplane
from mlray.serve.auth import KeyRing, hash_key
from mlray.serve.deploy import change_keys, deploy

HOSTILE = {  # request body text → the field its 422 must name
    "int beyond int64": ('"account_age_days": 9223372036854775808', "account_age_days"),
    "NaN": ('"amount": NaN', "amount"),
    "Infinity": ('"amount": Infinity', "amount"),
    "-Infinity": ('"amount": -Infinity', "amount"),
    "1e400": ('"amount": 1e400', "amount"),
    "huge string": ('"country": "' + "x" * 5000 + '"', "country"),
}


def _with(row: dict, fragment: str) -> str:
    """`row` as JSON text with one field replaced by a raw fragment (json.dumps cannot write 1e400)."""
    name = fragment.split(":")[0].strip('"')
    text = json.dumps({k: v for k, v in row.items() if k != name})
    return '{"row": ' + text[:-1] + ", " + fragment + "}}"


def _post_texts(url: str, bodies: list[str], concurrency: int = 41) -> list[tuple[int, dict]]:
    """POST each raw body at once over kept-alive connections; (status, JSON) in order."""
    async def run():
        headers = {"content-type": "application/json", "Authorization": f"Bearer {KEY}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            async def one(body):
                async with session.post(url, data=body, headers=headers) as response:
                    return response.status, await response.json(content_type=None)
            return await asyncio.gather(*(one(b) for b in bodies))
    return asyncio.run(run())


def _logged_ids(spec) -> set[str]:
    return set(dataplane.lake_of(spec).read(spec.serve.inference_log_table, columns=["request_id"])
               .column("request_id").to_pylist())


@pytest.mark.parametrize("case", list(HOSTILE))
def test_one_hostile_value_among_40_valid_requests_hurts_no_one_and_every_answer_is_logged(served, case):
    spec, url, _ = served
    rows = as_json_rows(raw_rows(spec, 40))
    fragment, field = HOSTILE[case]
    bodies = [json.dumps({"row": row}) for row in rows[:20]] + [_with(rows[0], fragment)] + \
             [json.dumps({"row": row}) for row in rows[20:]]
    answers = _post_texts(f"{url}/v1/predict", bodies)
    status, bad = answers[20]
    good = [answer for i, answer in enumerate(answers) if i != 20]
    print(f"\n{case}: bad request {status}; valid requests: {sum(s == 200 for s, _ in good)}/40 answered 200")
    assert status == 422 and field in json.dumps(bad["detail"]) and "Traceback" not in json.dumps(bad)
    assert [s for s, _ in good] == [200] * 40
    answered = {body["request_id"] for _, body in good}
    assert wait_until(lambda: answered <= _logged_ids(spec), timeout=30), "every answered request reaches the log"
    print(f"{case}: {len(answered & _logged_ids(spec))}/{len(answered)} answered requests in the inference log")


def test_feedback_is_stored_only_for_a_row_of_a_request_the_same_key_made(served):
    spec, url, _ = served
    other_key = "another-tenant-key-789-0123456789abcdefg"
    rows = as_json_rows(raw_rows(spec, 3))
    made = post(f"{url}/v1/predict", {"rows": rows}).json()["request_id"]
    sent = [post(f"{url}/v1/feedback", {"request_id": made, "row": row, "label": row == 1}) for row in range(3)]
    assert [r.status_code for r in sent] == [200] * 3 and all(r.json()["stored"] for r in sent)
    past_int32 = post(f"{url}/v1/feedback", {"request_id": made, "row": 2**31, "label": True})
    no_such_row = post(f"{url}/v1/feedback", {"request_id": made, "row": 3, "label": True})
    forged = post(f"{url}/v1/feedback", {"request_id": made[:-1] + ("0" if made[-1] != "0" else "1"), "label": True})
    wrong_type = post(f"{url}/v1/feedback", {"request_id": made, "row": 0, "label": "perhaps"})
    try:
        deploy(spec, keys=KeyRing([hash_key(other_key)], environ={}))
        stranger = post(f"{url}/v1/feedback", {"request_id": made, "row": 0, "label": False}, key=other_key)
    finally:
        change_keys(spec, [], [hash_key(other_key)])
    codes = {"row 2**31": past_int32.status_code, "row 3 of 3": no_such_row.status_code,
             "forged id": forged.status_code, "label not a bool": wrong_type.status_code,
             "another key": stranger.status_code}
    print(f"\nfeedback refused: {codes}")
    assert codes == {"row 2**31": 422, "row 3 of 3": 404, "forged id": 404, "label not a bool": 422, "another key": 403}
    assert "row" in past_int32.text and "label" in wrong_type.text

    def stored():
        return sorted(r["row"] for r in dataplane.lake_of(spec).read(spec.serve.labels_table).to_pylist()
                      if r["request_id"] == made)

    assert wait_until(lambda: stored() == [0, 1, 2], timeout=20), stored()
    # one ingress replica here: once a label sent after the refused ones lands, anything it buffered has landed too
    assert labels_flushed(spec, url), "a label sent after the refused ones never landed"
    assert stored() == [0, 1, 2]  # nothing refused lands
    logged = [r for r in dataplane.lake_of(spec).read(spec.serve.inference_log_table).to_pylist()
              if r["request_id"] == made]
    assert {r["key_fingerprint"] for r in logged} == {hash_key(KEY)[:15] + "…"} and not any(r["pinned"] for r in logged)


def test_the_openapi_document_needs_a_key_and_a_large_body_gets_413_from_every_client(served):
    spec, url, _ = served
    assert requests.get(f"{url}/openapi.json", timeout=10).status_code == 401
    document = requests.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert document.status_code == 200 and "/v1/predict" in document.json()["paths"]
    assert requests.get(f"{url}/docs", timeout=10).status_code == 404
    assert requests.get(f"{url}/v1/models", timeout=10).status_code == 401
    assert requests.get(f"{url}/v1/health", timeout=10).json() == {"status": "ok"}  # up or not, and nothing more
    body = json.dumps({"rows": as_json_rows(raw_rows(spec, 1)) * 20000}).encode()  # several MB, no Expect header
    assert len(body) > spec.serve.max_body_bytes
    headers = {"content-type": "application/json", "Authorization": f"Bearer {KEY}"}
    assert requests.post(f"{url}/v1/predict", data=body, headers=headers, timeout=30).status_code == 413
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"{url}/v1/predict", data=body, headers=headers), timeout=30)
    assert refused.value.code == 413


def test_a_batch_that_fails_is_scored_request_by_request_so_only_the_culprit_fails(small_model):
    """Past validation, a value can still fail the batch (here an int beyond int64 handed straight to the scorer):
    every other request of the batch gets its answer."""
    from mlray.registry.models import Registry
    from mlray.serve.model_server import LoadedVersion
    from mlray.serve.schema import request_columns, request_model, request_schema, row_model

    spec = small_model[0]
    registry = Registry(spec)
    columns, required = request_columns(spec)
    version = LoadedVersion(spec.platform, registry.artifact_uri(*registry.resolve("1")), "1",
                            request_schema(spec.train_table, columns))
    validated = request_model(row_model(spec.train_table, columns, required), 10)
    typed = validated.model_validate({"rows": as_json_rows(raw_rows(spec, 4))}).all_rows()
    culprit = typed[1] | {"customer_age": 2**64}
    alone = asyncio.run(version.score([[typed[0]], [typed[2], typed[3]]]))
    batch = asyncio.run(version.score([[typed[0]], [culprit], [typed[2], typed[3]]]))
    assert isinstance(batch[1], OverflowError) and "too large" in str(batch[1])
    assert batch[0] == alone[0] and batch[2] == alone[1]
    print(f"\na batch of 3 requests with one bad value: {sum(not isinstance(r, Exception) for r in batch)}/3 answered")
