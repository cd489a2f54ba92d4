"""Options of the translation tests.

``pytest tests/translation --update-golden`` (or ``GATEWAY_AGENT_UPDATE_GOLDEN=1 pytest ...``, which also
works when pytest starts from the repository root and never reads this file's options) rewrites the
golden files from the current translator instead of comparing against them.
"""

from __future__ import annotations

import os

import pytest

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
