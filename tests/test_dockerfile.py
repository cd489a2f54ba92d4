"""deploy/Dockerfile builds a small, non-root image of the agent alone, checked without docker.

The Dockerfile is parsed (stages, users, what is copied), the build context is assembled as
docker would from .dockerignore, and the build stage's wheel command is run on it: the wheel must
hold the agent's packages and its console script, and neither the test harness nor the tests,
and everything in it must import without them.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
RUNTIME_PACKAGES = {"agent", "activities", "intake", "models", "translation", "workflows"}
NEVER_SHIPPED = ("harness", "tests", "bench", "scripts", "docs", "deploy", ".venv", ".git", ".run")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comments dropped."""
    found, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        current += " " + stripped.removesuffix("\\") if current else stripped.removesuffix("\\")
        if not stripped.endswith("\\"):
            keyword, _, args = current.strip().partition(" ")
            found.append((keyword.upper(), args.strip()))
            current = ""
    return found


def _stages() -> list[Stage]:
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for keyword, rest in _instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            stages.append(Stage(base=base, name=parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def _copies(stage: Stage) -> list[tuple[list[str], str, list[str]]]:
    """(flags, destination, sources) of each COPY/ADD."""
    found = []
    for keyword, rest in stage.instructions:
        if keyword in ("COPY", "ADD"):
            words = shlex.split(rest)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            found.append((flags, paths[-1], paths[:-1]))
    return found


# ---------------------------------------------------------------------- .dockerignore, as docker reads it


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex + "$")))
    return rules


def _in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path (or a directory above it) decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, regex in rules:
        if any(regex.match(c) for c in candidates):
            included = negated
    return included


def _context_files() -> list[str]:
    rules = _ignore_rules()
    found = []
    for root, dirs, files in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", ".run", "node_modules")]
        found += [rel_root + f for f in files if _in_context(rel_root + f, rules)]
    return sorted(found)


@pytest.fixture(scope="module")
def context_files() -> list[str]:
    return _context_files()


# ---------------------------------------------------------------------- the Dockerfile


def test_two_stages_and_the_runtime_takes_only_the_built_virtualenv():
    build, runtime = _stages()
    assert build.name and runtime.base == build.base, "the runtime runs on the base the virtualenv was built on"
    assert build.of("RUN") and any("pip wheel" in r for r in build.of("RUN"))
    (copy,) = _copies(runtime)
    assert copy[0] == [f"--from={build.name}"] and copy[2] == ["/opt/venv"], "the runtime copies nothing else"
    assert not runtime.of("ADD")


def test_the_runtime_runs_as_a_numeric_non_root_user_without_a_healthcheck():
    runtime = _stages()[-1]
    (user,) = runtime.of("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0, user
    assert runtime.of("ENTRYPOINT") == ['["gateway-agent"]']
    # After USER nothing runs as root again.
    keywords = [kw for kw, _ in runtime.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]
    assert "HEALTHCHECK" not in keywords, "Kubernetes probes the health port"
    assert "PYTHONDONTWRITEBYTECODE=1" in " ".join(runtime.of("ENV")), "the root filesystem is read-only"


def test_the_build_copies_the_agent_and_nothing_of_the_harness_or_tests(context_files):
    build = _stages()[0]
    sources = [s.rstrip("/") for _, _, srcs in _copies(build) for s in srcs]
    assert not [s for s in sources if s.split("/")[0] in NEVER_SHIPPED]
    assert {s for s in sources if (REPO / s).is_dir()} == RUNTIME_PACKAGES
    for source in sources:
        assert any(f == source or f.startswith(source + "/") for f in context_files), (
            f"COPY {source}: not in the build context (.dockerignore)"
        )


def test_the_build_context_holds_only_what_the_build_copies(context_files):
    top = {f.split("/")[0] for f in context_files}
    assert top == RUNTIME_PACKAGES | {"pyproject.toml", "README.md", "worker.py"}
    assert not [f for f in context_files if "__pycache__" in f or f.endswith(".pyc")]


# ---------------------------------------------------------------------- the wheel


@pytest.fixture(scope="module")
def wheel(context_files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build stage's ``pip wheel --no-deps --wheel-dir /wheels .``, run on the build context
    (offline: the dev install provides the build backend pyproject.toml asks for)."""
    build = _stages()[0]
    (command,) = [r for r in build.of("RUN") if "pip wheel" in r]
    assert "pip wheel --no-deps --wheel-dir /wheels ." in command
    src, out = tmp_path_factory.mktemp("context"), tmp_path_factory.mktemp("wheels")
    for relative in context_files:
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, src / relative)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(out), "."],
        cwd=src, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_holds_the_agent_alone(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == RUNTIME_PACKAGES | {"worker.py"}
    assert not [n for n in names if n.split("/")[0] in NEVER_SHIPPED]
    for package in RUNTIME_PACKAGES:
        assert f"{package}/__init__.py" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"^gateway-agent\s*=\s*agent\.cli:app$", text, re.MULTILINE), text


def test_nothing_in_the_wheel_needs_the_harness_or_the_tests(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
        modules = [n for n in archive.namelist() if n.endswith(".py")]
    for name in modules:
        for node in ast.walk(ast.parse((tmp_path / name).read_text(), name)):
            imported = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported = [node.module]
            assert not [i for i in imported if i.split(".")[0] in ("harness", "tests", "bench")], f"{name}: {imported}"
    # And it imports from the wheel alone (isolated mode: no repository on sys.path).
    dotted = sorted(
        n.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for n in modules
        if not n.endswith("__main__.py")  # runs the CLI
    )
    script = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"for name in {dotted!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(tmp_path)!r}), (name, module.__file__)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('harness', 'tests')]\n"
    )
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
