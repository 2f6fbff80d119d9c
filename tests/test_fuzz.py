"""Fuzzing the OpenAPI schema with schemathesis against a real server (uvicorn on 127.0.0.1, a real
redis-server, API keys on): valid and invalid cases for every operation, and for each response the
checks that it is not a server error and that it conforms to the schema (status code, content type,
headers and body)."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

KEY = "fuzz-key-0123456789"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance]
CHECKS.append(response_schema_conformance)


def _fuzz(base_url: str, minimum: int, rng_seed: int, headers: dict[str, str]) -> tuple[int, Counter[int], list[str]]:
    """Valid and invalid cases for every operation of the schema served at ``base_url``, in rounds until at
    least ``minimum`` were sent; returns (cases, status counts, failures)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    cases, statuses, failures = 0, Counter[int](), []
    per_operation = max(2, -(-minimum // len(operations)))
    rounds = 0
    while cases < minimum:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @seed(rng_seed + rounds)
                @settings(
                    max_examples=per_operation // 2, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )  # fmt: skip
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: Any) -> None:
                    nonlocal cases
                    response = case.call(base_url=base_url, headers=headers, timeout=60)
                    cases += 1
                    statuses[response.status_code] += 1
                    try:
                        case.validate_response(response, checks=CHECKS, headers=headers)
                    except (FailureGroup, Exception) as exc:  # collected: the test lists every failure at the end
                        failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {exc}"[:1500])

                try:
                    run()
                except Unsatisfiable:  # no invalid input exists for an operation without parameters
                    assert mode is GenerationMode.NEGATIVE, operation.label
        rounds += 1
    return cases, statuses, failures


@pytest.mark.parametrize(
    "minimum",
    [pytest.param(150, id="150-cases"), pytest.param(1000, id="1000-cases", marks=[pytest.mark.full, pytest.mark.timeout(1800)])],
)
def test_fuzzing_the_openapi_schema_finds_no_server_error_and_no_schema_break(minimum: int, live_app: Callable[..., str]) -> None:
    # chunks as large as allowed, so fuzzed million-image jobs cost Redis little; no worker, so they stay queued
    base_url = live_app(with_worker=False, api_keys=KEY, chunk_size=65536, max_queued_images=5_000_000)
    # the fast run replays one fixed seed, so CI is deterministic; the full run explores a new one each time
    rng_seed = int(os.environ.get("SYNTHGEN_FUZZ_SEED") or (random.randrange(1 << 32) if minimum >= 1000 else 20_000))
    cases, statuses, failures = _fuzz(base_url, minimum, rng_seed, {"Authorization": f"Bearer {KEY}"})
    print(f"\nschemathesis: {cases} cases (seed {rng_seed}); statuses {dict(sorted(statuses.items()))}")
    assert not failures, f"{len(failures)} failing cases (SYNTHGEN_FUZZ_SEED={rng_seed}):\n" + "\n".join(failures[:20])
    assert cases >= minimum
    assert not [s for s in statuses if s >= 500]


def test_the_fuzzer_does_catch_server_errors_and_schema_breaks() -> None:
    """The same harness against an app that is broken on purpose: it must report both kinds of failure."""
    broken = FastAPI()

    class Out(BaseModel):
        n: int

    @broken.get("/n/{x}", response_model=Out)
    def n(x: int) -> Any:
        if x % 2:
            return JSONResponse({"n": "not a number"})  # breaks the documented response schema
        raise RuntimeError("boom")  # a 500

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(broken, log_level="critical", log_config=None, ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        _, statuses, failures = _fuzz(f"http://127.0.0.1:{sock.getsockname()[1]}", 20, 1, {})
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert statuses[500] and any("500" in f and "Server error" in f for f in failures), failures
    assert any("-> 200" in f and "Response violates schema" in f for f in failures), failures
