"""The bench command's report (``python -m bench``): verdicts, Markdown and chart from a result.

The whole command takes over a minute even at ``--quick`` sizes, so the suite checks only the
report's structure, from a result shaped like the command's (no speed is asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "__main__.py"


def load_bench():  # noqa: ANN201 - the module
    spec = importlib.util.spec_from_file_location("bench_main", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result() -> dict:
    latency = {"n": 3, "p50": 100.0, "p90": 120.0, "p95": 130.0, "p99": 140.0, "max": 150.0, "samples": [90, 100, 150]}
    translation = {"parse_translate_per_s": 900.0, "parse_translate_per_cpu_s": 1100.0, "translate_per_s": 1500.0,
                   "translate_per_cpu_s": 1600.0}  # fmt: skip
    phase = {"wall_s": 1.0, "worker_cpu_s": 0.5, "temporal_cpu_s": 0.4, "others_cpu_s": 0.1}
    return {
        "started_at": "2026-12-03T00:00:00+00:00",
        "commit": "abc1234",
        "dirty": False,
        "machine": {
            "nproc": 2,
            "cpu_model": "AMD EPYC",
            "python": "3.11.7",
            "temporalio": "1.35.0",
            "loadavg_before": ["0.1", "0.1", "0.1"],
        },  # fmt: skip
        "sizes": {"latency": 3, "burst": 4, "apis": 4, "apps": 2, "subs": 2},
        "wall_seconds": 60.0,
        "translation": {"rest": translation, "graphql": translation},
        "baseline": {"latency_ms": latency, "burst": {"n": 4, "seconds": 2.0, "per_s": 2.0}},
        "agent": {
            "latency_ms": latency | {"p50": 90.0},
            "burst": {
                "n": 4,
                "seconds": 1.0,
                "per_s": 4.0,
                "publish_seconds": 0.1,
                "worker_peak_rss_mib": 150.0,
                "completions_s": [0.2, 0.4, 0.6, 1.0],
            },  # fmt: skip
            "catchup": {
                "seconds": 5.0,
                "sync_workflow_seconds": 2.0,
                "worker_peak_rss_mib": 160.0,
                "completions_s": [3.0, 4.0, 4.5, 5.0],
            },  # fmt: skip
        },
        "floor": {
            "burst": {"objects": 64, "apply_seconds": 0.4, "seconds": 0.5},
            "catchup": {"objects": 80, "apply_seconds": 1.0, "seconds": 1.0},
        },
        "phases": {"latency": phase, "agent_burst": phase},
    }


def test_verdicts_markdown_and_chart(tmp_path: Path) -> None:
    bench = load_bench()
    r = result()
    r["verdicts"] = bench.verdicts(r)
    assert [v["pass"] for v in r["verdicts"]] == [True, True, False, True, True, True]
    assert {"target", "figure", "ratio", "wanted", "pass"} <= set(r["verdicts"][0])
    assert r["verdicts"][2]["ratio"] == 5.0  # catch-up 5 s over a floor of 1 s
    written = bench.write(r, "smoke", tmp_path)
    assert sorted(p.name for p in written) == sorted(
        f"{stem}.{ext}" for stem in ("latest", "bench-smoke") for ext in ("json", "md", "png")
    )
    text = (tmp_path / "latest.md").read_text()
    assert text.count("| PASS |") == 5 and text.count("| MISS |") == 1
    assert json.loads((tmp_path / "latest.json").read_text())["verdicts"] == r["verdicts"]
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_sizes_apply_unless_given() -> None:
    bench = load_bench()
    assert bench.parse_args([]).burst == 1000 and bench.parse_args([]).subs == 10000
    quick = bench.parse_args(["--quick", "--burst", "70"])
    assert quick.burst == 70 and quick.latency == bench.QUICK["latency"]
