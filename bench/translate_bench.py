"""Translated APIs per second on one core: parse (apis.zip) + translate, and translate alone.

The agent translates inside an activity on every deploy event, and a full resync translates every
API of a gateway at once; this says how many a worker core gets through. Inputs are realistic
APIM exports built by ``harness.api_projects``: a mid-size REST API (20 operations, scopes, a
throttled operation, prod + sandbox endpoints with BASIC credentials) and the Star Wars GraphQL API.
Results and the machine they came from are in bench/README.md.

Run: .venv/bin/python bench/translate_bench.py [--iterations 500] [--warmup 50]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.api_projects import (  # noqa: E402
    DEFAULT_GRAPHQL_SDL,
    ApiProjectFiles,
    Deployment,
    apis_zip,
    gateway_environment,
    graphql_api_project,
    rest_api_project,
)
from models.artifact import DeployedApi  # noqa: E402
from translation import secret_name_key  # noqa: E402
from translation.artifacts import parse_runtime_artifacts  # noqa: E402
from translation.translate import TranslationOptions, translate_api  # noqa: E402

# A fixed key, so every run names the REST API's credential Secret alike (as a worker does).
BENCH_SEALING_KEY = "translate-bench-fixed-sealing-key"
OPTIONS = TranslationOptions(
    namespace="apk-apis", gateway_labels=["Default"], secret_name_key=secret_name_key(BENCH_SEALING_KEY)
)
REST_OPERATIONS = [
    {"target": "/orders", "verb": "GET"},
    {"target": "/orders", "verb": "POST", "scopes": ["orders:write"]},
    {"target": "/orders/{orderId}", "verb": "GET"},
    {"target": "/orders/{orderId}", "verb": "PUT", "scopes": ["orders:write"]},
    {"target": "/orders/{orderId}", "verb": "PATCH", "scopes": ["orders:write"]},
    {"target": "/orders/{orderId}", "verb": "DELETE", "scopes": ["orders:admin"]},
    {"target": "/orders/{orderId}/items", "verb": "GET"},
    {"target": "/orders/{orderId}/items", "verb": "POST", "scopes": ["orders:write"]},
    {"target": "/orders/{orderId}/items/{itemId}", "verb": "GET"},
    {"target": "/orders/{orderId}/items/{itemId}", "verb": "DELETE", "scopes": ["orders:write"]},
    {"target": "/orders/{orderId}/status", "verb": "GET"},
    {"target": "/orders/{orderId}/cancel", "verb": "POST", "scopes": ["orders:write"]},
    {"target": "/customers/{customerId}/orders", "verb": "GET"},
    {"target": "/search", "verb": "GET", "throttlingPolicy": "10KPerMin"},
    {"target": "/reports/daily", "verb": "GET", "scopes": ["orders:admin"]},
    {"target": "/reports/monthly", "verb": "GET", "scopes": ["orders:admin"]},
    {"target": "/health", "verb": "GET", "authType": "None"},
    {"target": "/version", "verb": "GET", "authType": "None"},
    {"target": "/files/*", "verb": "GET"},
    {"target": "/webhooks/{hookId}", "verb": "POST"},
]
GRAPHQL_OPERATIONS = [
    {"target": "hero", "verb": "QUERY"},
    {"target": "droid", "verb": "QUERY", "scopes": ["starwars:droids"]},
    {"target": "createReview", "verb": "MUTATION", "scopes": ["starwars:review"]},
]


def rest_api() -> ApiProjectFiles:
    return rest_api_project(
        uuid="5a0f3c1e-7b2d-4e6f-8a9c-0d1e2f3a4b5c",
        name="OrdersAPI",
        version="2.3.0",
        context="/commerce/orders",
        production_url="https://orders.commerce.example:8443/api/v2",
        sandbox_url="https://sandbox.orders.commerce.example:8443/api/v2",
        operations=REST_OPERATIONS,
        endpoint_security={
            "production": {"type": "BASIC", "username": "gateway", "password": "bench-only-password"},
        },
    )


def graphql_api() -> ApiProjectFiles:
    return graphql_api_project(
        uuid="9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a",
        name="StarWarsAPI",
        version="1.0.0",
        context="/swapi",
        production_url="http://swapi.starwars.svc.cluster.local:4000/graphql",
        sdl=DEFAULT_GRAPHQL_SDL,
        operations=GRAPHQL_OPERATIONS,
    )


def per_second(work: Callable[[], object], iterations: int, warmup: int) -> tuple[float, float, float]:
    """Calls per second and mean milliseconds per call, timed after ``warmup`` untimed calls, and
    calls per CPU second of this process (what one core does when others' work shares it)."""
    for _ in range(warmup):
        work()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(iterations):
        work()
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    return iterations / elapsed, elapsed / iterations * 1000, iterations / max(used, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (for python -m bench)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as one activity uses

    rows = []
    for label, project in (("REST, 20 operations", rest_api()), ("GraphQL, 3 fields", graphql_api())):
        archive = apis_zip([Deployment(project, [gateway_environment("Default", deployed_at_ms=1)])])
        parsed: DeployedApi = parse_runtime_artifacts(archive).apis[0]
        objects = len(translate_api(parsed, OPTIONS))

        def parse_and_translate(archive: bytes = archive) -> object:
            return translate_api(parse_runtime_artifacts(archive).apis[0], OPTIONS)

        def translate_only(parsed: DeployedApi = parsed) -> object:
            return translate_api(parsed, OPTIONS)

        both = per_second(parse_and_translate, args.iterations, args.warmup)
        alone = per_second(translate_only, args.iterations, args.warmup)
        rows.append((label, objects, len(archive), both, alone))

    if args.json:
        print(json.dumps({
            key: {"objects": objects, "zip_bytes": size, "parse_translate_per_s": round(both[0], 1),
                  "parse_translate_ms": round(both[1], 3), "parse_translate_per_cpu_s": round(both[2], 1),
                  "translate_per_s": round(alone[0], 1), "translate_ms": round(alone[1], 3),
                  "translate_per_cpu_s": round(alone[2], 1)}
            for key, (_, objects, size, both, alone) in zip(("rest", "graphql"), rows, strict=True)
        } | {"iterations": args.iterations, "warmup": args.warmup, "cores": 1}))  # fmt: skip
        return

    print(f"Python {sys.version.split()[0]}, {args.iterations} iterations after {args.warmup} warm-up, one core")
    header = f"{'API':<22}{'objects':>8}{'zip bytes':>10}  {'parse+translate':>22}  {'translate alone':>22}"
    print(header)
    print("-" * len(header))
    for label, objects, size, (both_rate, both_ms, _), (alone_rate, alone_ms, _) in rows:
        print(
            f"{label:<22}{objects:>8}{size:>10}  {both_rate:>9.0f} /s {both_ms:>7.3f} ms"
            f"  {alone_rate:>9.0f} /s {alone_ms:>7.3f} ms"
        )


if __name__ == "__main__":
    main()
