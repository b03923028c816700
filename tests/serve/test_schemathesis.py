"""Property-based fuzzing of the whole OpenAPI schema (schemathesis): a few hundred generated requests,
valid and invalid, against a live server; none may answer 5xx, and every JSON error is OpenAI's shape."""
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lmforge.serve import Settings, create_app
from lmforge.serve.served import serve_model

from .conftest import Server, free_port

pytestmark = pytest.mark.filterwarnings("ignore")
EXAMPLES = 60  # per operation; about a dozen operations
BUDGET_S = 90  # all of it together stays well within this


@pytest.fixture(scope="module")
def fuzzed(tiny_models, tmp_path_factory):
    """A server of its own (fresh engines; the watermark on, so its paths are exercised too)."""
    models = [serve_model(m.model, m.tokenizer, m.name) for m in tiny_models]
    config = Settings(home=tmp_path_factory.mktemp("fuzz"), port=free_port(), max_body_bytes=20_000,
                      watermark_key="fuzz-watermark-secret")
    with Server(create_app(config, models), config) as s:
        s.fuzz_key = s.key("fuzzer")
        s.started_at = time.monotonic()
        yield s


def test_no_server_errors(fuzzed):
    """Every operation in /openapi.json, EXAMPLES generated cases each (hypothesis drives schemathesis's
    strategies directly: its pytest plugin does not support this pytest)."""
    schema = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    calls, failures = [0], []

    for operation in operations:
        @given(case=operation.as_strategy(), model=st.sampled_from([None, "tiny-gpt2", "tiny-t5", "tiny-bert"]))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def check(case, model):
            if time.monotonic() - fuzzed.started_at > BUDGET_S:
                return
            if model and isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = model  # reach the models, not only model_not_found
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {fuzzed.fuzz_key}"}
            response = case.call(timeout=30)
            calls[0] += 1
            problem = None
            if response.status_code >= 500 or "Traceback" in response.text:
                problem = "server error"
            elif response.status_code >= 400 and "application/json" in str(response.headers.get("content-type")):
                body = response.json()
                if set(body) != {"error"} or not {"message", "type", "param", "code"} <= set(body["error"]):
                    problem = "not the OpenAI error shape"
            if problem:
                failures.append((problem, response.status_code, case.as_curl_command(), response.text[:300]))

        check()
    assert not failures, failures[:5]
    assert calls[0] >= 200, calls[0]
