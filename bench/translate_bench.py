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


def rest_api(n: int = 0) -> ApiProjectFiles:
    """The REST API; ``n`` > 0 makes it the n-th of a family of distinct APIs: its own id, name,
    context, resource paths and so its own definition (nothing any memo of the agent has seen)."""
    suffix = str(n) if n else ""
    operations = [{**o, "target": o["target"].replace("/orders", f"/orders{suffix}", 1)} for o in REST_OPERATIONS]
    return rest_api_project(
        uuid=f"5a0f3c1e-7b2d-4e6f-8a9c-{n:012x}" if n else "5a0f3c1e-7b2d-4e6f-8a9c-0d1e2f3a4b5c",
        name=f"OrdersAPI{suffix}",
        version="2.3.0",
        context=f"/commerce/orders{suffix}",
        production_url="https://orders.commerce.example:8443/api/v2",
        sandbox_url="https://sandbox.orders.commerce.example:8443/api/v2",
        operations=operations,
        endpoint_security={
            "production": {"type": "BASIC", "username": "gateway", "password": "bench-only-password"},
        },
    )


def graphql_api(n: int = 0) -> ApiProjectFiles:
    """The GraphQL API; ``n`` > 0: the n-th of a family of distinct APIs, each with its own schema
    (a type of its own added to the Star Wars schema)."""
    suffix = str(n) if n else ""
    sdl = DEFAULT_GRAPHQL_SDL + (f"\ntype Bench{n} {{ id: ID! name: String }}\n" if n else "")
    return graphql_api_project(
        uuid=f"9c8b7a6f-5e4d-4c3b-a2a1-{n:012x}" if n else "9c8b7a6f-5e4d-4c3b-a2a1-0f9e8d7c6b5a",
        name=f"StarWarsAPI{suffix}",
        version="1.0.0",
        context=f"/swapi{suffix}",
        production_url="http://swapi.starwars.svc.cluster.local:4000/graphql",
        sdl=sdl,
        operations=GRAPHQL_OPERATIONS,
    )


def per_second(work: Callable[[int], object], iterations: int, warmup: int) -> tuple[float, float, float]:
    """Calls per second and mean milliseconds per call, timed after ``warmup`` untimed calls, and
    calls per CPU second of this process (what one core does when others' work shares it).
    ``work`` gets the call's number: calls ``warmup`` to ``warmup + iterations - 1`` are timed."""
    for index in range(warmup):
        work(index)
    started, cpu = time.perf_counter(), time.process_time()
    for index in range(warmup, warmup + iterations):
        work(index)
    elapsed, used = time.perf_counter() - started, time.process_time() - cpu
    return iterations / elapsed, elapsed / iterations * 1000, iterations / max(used, 1e-9)


def archive_of(project: ApiProjectFiles) -> bytes:
    return apis_zip([Deployment(project, [gateway_environment("Default", deployed_at_ms=1)])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (for python -m bench)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as one activity uses

    rows = []
    families = (("REST, 20 operations", rest_api), ("GraphQL, 3 fields", graphql_api))
    for label, family in families:
        # The figure: distinct APIs, each parsed and translated once, as a burst or a first full
        # sync sees them (built before the clock starts). Then the same API again and again, as
        # a periodic full sync or a redeploy of a revision sees it (memos hit).
        count = args.warmup + args.iterations
        archives = [archive_of(family(n)) for n in range(1, count + 1)]
        parsed = [parse_runtime_artifacts(archive_of(family(n))).apis[0] for n in range(count + 1, 2 * count + 1)]
        archive = archive_of(family(0))
        objects = len(translate_api(parse_runtime_artifacts(archive).apis[0], OPTIONS))

        def parse_and_translate(index: int, archives: list[bytes] = archives) -> object:
            return translate_api(parse_runtime_artifacts(archives[index]).apis[0], OPTIONS)

        def translate_only(index: int, parsed: list[DeployedApi] = parsed) -> object:
            return translate_api(parsed[index], OPTIONS)

        def again(index: int, archive: bytes = archive) -> object:
            return translate_api(parse_runtime_artifacts(archive).apis[0], OPTIONS)

        both = per_second(parse_and_translate, args.iterations, args.warmup)
        alone = per_second(translate_only, args.iterations, args.warmup)
        repeated = per_second(again, args.iterations, args.warmup)
        rows.append((label, objects, len(archive), both, alone, repeated))

    if args.json:
        print(json.dumps({
            key: {"objects": objects, "zip_bytes": size, "parse_translate_per_s": round(both[0], 1),
                  "parse_translate_ms": round(both[1], 3), "parse_translate_per_cpu_s": round(both[2], 1),
                  "translate_per_s": round(alone[0], 1), "translate_ms": round(alone[1], 3),
                  "translate_per_cpu_s": round(alone[2], 1), "repeated_per_s": round(repeated[0], 1),
                  "repeated_per_cpu_s": round(repeated[2], 1), "distinct_apis": True}
            for key, (_, objects, size, both, alone, repeated) in zip(("rest", "graphql"), rows, strict=True)
        } | {"iterations": args.iterations, "warmup": args.warmup, "cores": 1}))  # fmt: skip
        return

    print(f"Python {sys.version.split()[0]}, {args.iterations} iterations after {args.warmup} warm-up, one core")
    print("distinct APIs: each parsed and translated once; again: one API parsed and translated again")
    header = (
        f"{'API':<22}{'objects':>8}{'zip bytes':>10}  {'parse+translate':>22}  {'translate alone':>22}"
        f"  {'again':>22}"
    )
    print(header)
    print("-" * len(header))
    for label, objects, size, *figures in rows:
        print(f"{label:<22}{objects:>8}{size:>10}" + "".join(f"  {r:>9.0f} /s {ms:>7.3f} ms" for r, ms, _ in figures))


if __name__ == "__main__":
    main()
