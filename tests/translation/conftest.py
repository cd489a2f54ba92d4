"""Options and shared fixtures of the translation tests.

``pytest tests/translation --update-golden`` (or ``GATEWAY_AGENT_UPDATE_GOLDEN=1 pytest ...``, which also
works when pytest starts from the repository root and never reads this file's options) rewrites the
golden files from the current translator instead of comparing against them.
"""

from __future__ import annotations

import os

import pytest

from translation.crd_schemas import CrdSchemas, default_crd_dir, load_crd_schemas

UPDATE_GOLDEN_ENV = "GATEWAY_AGENT_UPDATE_GOLDEN"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/translation/golden/* from the current translator output instead of comparing",
    )


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    option = bool(request.config.getoption("--update-golden", default=False))
    return option or os.environ.get(UPDATE_GOLDEN_ENV, "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def crds() -> CrdSchemas:
    """The APK CRDs' schemas; tests that need them skip, saying where they looked, without them."""
    directory = default_crd_dir()
    if not directory.is_dir():
        pytest.skip(f"CRDs not found at {directory}; set GATEWAY_AGENT_CRD_DIR to the apk-crds directory")
    return load_crd_schemas(directory)
