"""The service's own OpenAPI document, fuzzed with schemathesis against a real deployment on 127.0.0.1: whatever a
caller sends (well-formed or not, with a key or without), no answer is a 5xx, none carries a stack trace, and none
carries the API key, its hash or the request-id secret. The test prints how many cases ran and their status codes."""

import collections
import time
from urllib.parse import urlsplit

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from serving import KEY, as_json_rows, post, raw_rows

from mlray.serve.auth import hash_key

# (operation, generation mode) → Hypothesis examples; ≥ 500 cases in all, well under a minute on a 2-core machine.
BUDGET = {
    ("POST /v1/predict", GenerationMode.POSITIVE): 400,
    ("POST /v1/predict", GenerationMode.NEGATIVE): 200,
    ("POST /v1/feedback", GenerationMode.POSITIVE): 200,
    ("POST /v1/feedback", GenerationMode.NEGATIVE): 125,
    ("GET /v1/models", GenerationMode.POSITIVE): 50,
    ("GET /v1/health", GenerationMode.POSITIVE): 25,
}
MIN_CASES = 500

# What an Authorization header may be: mostly the valid key, sometimes none, another key or a mangled one.
VALID = f"Bearer {KEY}"
OTHER_AUTHORIZATION = st.one_of(
    st.none(), st.sampled_from(["Bearer another-key-456", f"Bearer {KEY}x", KEY, f"Basic {KEY}", f"bearer {KEY}",
                                "Bearer ", f"Bearer  {KEY}"]),
    st.from_regex(r"\ABearer [ -~]{0,80}\Z"),  # printable ASCII: what requests can put in a header
)
AUTHORIZATION = st.sampled_from([True, True, True, False]).flatmap(lambda valid: st.just(VALID) if valid else
                                                                  OTHER_AUTHORIZATION)


def request_id_secret(spec) -> str:
    import ray

    from mlray.serve.control import owner

    return ray.get(owner(spec).request_id_secret.remote(), timeout=30)


def test_the_openapi_document_fuzzed_gets_no_5xx_no_trace_and_no_secret(served):
    spec, url, _ = served
    assert urlsplit(url).hostname == "127.0.0.1"  # every case goes to the local deployment, nowhere else
    session = requests.Session()
    raw = session.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert raw.status_code == 200, raw.text
    document = raw.json()
    for path in ("/v1/predict", "/v1/feedback"):  # the bodies the ingress validates are documented
        assert "requestBody" in document["paths"][path]["post"], path
    schema = schemathesis.openapi.from_dict(document)
    secrets = {"the API key": KEY, "the key's hash": hash_key(KEY).split(":", 1)[1],
               "the request-id secret": request_id_secret(spec)}
    known_ids = [post(f"{url}/v1/predict", {"rows": as_json_rows(raw_rows(spec, 5, offset))}).json()["request_id"]
                 for offset in (0, 5, 10)]  # feedback cases sometimes name one: they reach the labels, not a 404

    codes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    failures: dict[str, list[str]] = {}  # what broke, for which request → the answers

    def check(case, authorization, response) -> None:
        text = response.content.decode("utf-8", "replace")
        headers = str(dict(response.headers))
        found = [f"status {response.status_code}"] if response.status_code >= 500 else []
        found += [f"a stack trace ({mark!r})" for mark in ("Traceback", 'File "/') if mark in text]
        found += [f"{what} in the {where}" for what, secret in secrets.items()
                  for where, seen in (("body", text), ("headers", headers)) if secret in seen]
        if found:
            sent = "no Authorization" if authorization is None else f"Authorization: {authorization.replace(KEY, '<KEY>')}"
            curl = case.as_curl_command(base_url=url)  # the curl command leaves the key out
            failures.setdefault(f"{', '.join(found)}: {curl}", []).append(f"{sent} → {text[:300]}")

    def run(label: str, mode: GenerationMode, examples: int) -> None:
        method, path = label.split(" ")
        strategy = schema[path][method].as_strategy(generation_mode=mode)

        @settings(max_examples=examples, deadline=None, derandomize=True, database=None, print_blob=False,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(case=strategy, authorization=AUTHORIZATION, known=st.one_of(
            st.none(), st.tuples(st.sampled_from(known_ids), st.one_of(st.none(), st.integers(0, 4)))))
        def one(case, authorization, known):
            if known and path == "/v1/feedback" and isinstance(case.body, dict) and "request_id" in case.body:
                request_id, row = known  # a request the key made (and sometimes one of its rows)
                case.body = {**case.body, "request_id": request_id} | ({} if row is None else {"row": row})
            headers = {"Authorization": authorization} if authorization is not None else {}
            response = case.call(base_url=url, session=session, headers=headers, timeout=30)
            codes[f"{label} ({mode.value})"][response.status_code] += 1
            check(case, authorization, response)

        one()

    started = time.perf_counter()
    for (label, mode), examples in BUDGET.items():
        run(label, mode, examples)
    took = time.perf_counter() - started

    total = sum(sum(counter.values()) for counter in codes.values())
    overall = sum(codes.values(), collections.Counter())
    print(f"\nschemathesis: {total} cases in {took:.0f} s; status codes: {dict(sorted(overall.items()))}")
    for label, counter in codes.items():
        print(f"  {label}: {sum(counter.values())} cases, {dict(sorted(counter.items()))}")
    for failure, answers in failures.items():
        print(f"  FAILED {len(answers)}x {failure}\n    {answers[0]}")
    assert not failures, f"{len(failures)} distinct requests broke the contract; the first: {next(iter(failures))}"
    assert total >= MIN_CASES, f"only {total} cases ran"
    assert overall[200] > 0 and codes["POST /v1/predict (positive)"][200] > 0, "well-formed cases reached the model"
