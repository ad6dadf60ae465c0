"""The serving API's description on loopback: offline /docs and /redoc, each served
model's own predict body and examples, and Schemathesis over all of it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import FailureGroup, positive_data_acceptance

from tests.serving import test_http
from tests.serving.conftest import NUMERIC, categorical_model, sandboxed
from tests.serving.test_http import Served

pytestmark = [sandboxed, pytest.mark.sandbox, pytest.mark.slow]
served = test_http.served  # the fixture: a real server with a served model
ERRORS = {"400", "404", "409", "413", "422", "503"}
MAX_EXAMPLES = 25  # per operation and mode: bounded, about 250 cases in all


def _serve_colours(served: Served) -> None:
    categorical_model(served.base / "c1")
    served.registry.add("colours", 1, served.base / "c1")
    served.registry.promote("colours", 1)
    served.manager.refresh()


def test_docs_and_redoc_need_no_other_host(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        for page, marker in (("/docs", "SwaggerUIBundle"), ("/redoc", "Redoc")):
            response = http.get(page)
            assert response.status_code == 200
            html = response.text
            assert "http://" not in html and "https://" not in html, html
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            assert assets and all(
                url.startswith("/") and not url.startswith("//") for url in assets
            )
            scripts = [url for url in assets if url.endswith(".js")]
            assert scripts
            for url in assets:
                asset = http.get(url)
                assert asset.status_code == 200, url
            script = http.get(scripts[0])
            assert "javascript" in script.headers["content-type"]
            assert len(script.content) > 100_000 and marker in script.text


def _post(url: str, body: Any) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


def test_each_model_has_its_own_predict_body_and_working_examples(served: Served) -> None:
    _serve_colours(served)
    spec = httpx.get(f"{served.url}/openapi.json").json()
    paths = spec["paths"]
    for name, properties in (
        ("churn", {n: {"type": "number"} for n in NUMERIC}),
        (
            "colours",
            {
                "colour": {"type": "string", "enum": ["blue", "green", "red"]},
                "size": {"type": "number"},
            },
        ),
    ):
        operation = paths[f"/models/{name}/predict"]["post"]
        content = operation["requestBody"]["content"]["application/json"]
        record = content["schema"]["anyOf"][-1]
        assert record["properties"] == properties
        assert record["required"] == list(properties)
        assert record["additionalProperties"] is False
        assert set(operation["responses"]) == {"200", *ERRORS}
        for status in ERRORS:
            body = operation["responses"][status]["content"]["application/json"]
            assert body["schema"] == {"$ref": "#/components/schemas/ServingError"}
        # Every example of the path is accepted by the real model behind it.
        examples = content["examples"]
        assert set(examples) == {"records", "columns", "dataframe_split", "one_record"}
        for example in examples.values():
            response = _post(f"{served.url}/models/{name}/predict", example["value"])
            assert response.status_code == 200, (name, example, response.text)
            assert response.json()["model"] == name
    assert {"ServingError", "ServingErrorItem", "Prediction"} <= set(spec["components"]["schemas"])
    # The templated path documents the errors and no made-up columns.
    generic = paths["/models/{name}/predict"]["post"]
    assert set(generic["responses"]) == {"200", *ERRORS}
    assert "feature_a" not in str(generic)
    # POST /predict takes the only model's body; with two served, no particular one.
    assert "examples" not in paths["/predict"]["post"]["requestBody"]["content"]["application/json"]


def test_predict_takes_the_only_models_body(served: Served) -> None:
    operation = httpx.get(f"{served.url}/openapi.json").json()["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert set(content["schema"]["anyOf"][-1]["properties"]) == set(NUMERIC)
    for example in content["examples"].values():
        assert _post(f"{served.url}/predict", example["value"]).status_code == 200


def _unexpressible(body: Any) -> list[Any]:
    """JSON Schema cannot say that column lists share one length, or that a row of a
    dataframe_split has one value per named column: schema-valid bodies of those
    two shapes may rightly get a 422, so only there valid data may be refused. Nor
    that an inference request (V2) has one tensor per column of the model."""
    if isinstance(body, dict) and body.keys() & {"columns", "dataframe_split", "inputs"}:
        return [positive_data_acceptance]
    return []


def test_schemathesis_finds_no_server_error_and_answers_match_the_description(
    served: Served,
) -> None:
    _serve_colours(served)
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    cases, failures = 0, []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in GenerationMode:

                @hypothesis.settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=True,
                    suppress_health_check=list(hypothesis.HealthCheck),
                    phases=[hypothesis.Phase.generate],
                )
                @hypothesis.given(operation.as_strategy(generation_mode=mode))
                def run(case: schemathesis.Case) -> None:
                    nonlocal cases
                    cases += 1
                    try:
                        case.call_and_validate(
                            base_url=served.url,
                            session=session,
                            excluded_checks=_unexpressible(case.body),
                        )
                    except FailureGroup as group:
                        failures.extend(
                            f"{operation.label} ({mode}): {failure.title}: {failure.message}"
                            f"\n  body: {str(case.body)[:300]}\n  {str(group)[-600:]}"
                            for failure in group.exceptions
                        )

                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    # Nothing invalid can be sent to an operation without inputs.
                    assert mode is GenerationMode.NEGATIVE, operation.label
    print(f"schemathesis: {cases} cases, {len(failures)} failures", *failures, sep="\n")
    assert failures == []
    assert cases >= 100
