"""Rendering deploy/ the way `kubectl apply -k` does, for the manifest, RBAC and monitoring tests."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
MONITORING = DEPLOY / "monitoring"

Doc = dict[str, Any]


@lru_cache
def _render(path: Path) -> str:
    done = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{done.stderr}")
    return done.stdout


def render(path: Path = DEPLOY) -> list[Doc]:
    """Every document `kubectl kustomize <path>` renders (a fresh copy each call)."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: cannot render the kustomization (install kubectl to run this test)")
    return [doc for doc in yaml.safe_load_all(_render(path)) if doc is not None]


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}{' ' + name if name else ''}, found {len(found)}"
    return found[0]
