"""Packaging (issue 12): the GPU extras match what RAPIDS 26.10 requires, and environment.yml agrees with them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
# cudf-cu12/cu13 and cuml-cu12/cu13 26.10 require this CuPy (their wheels' METADATA).
RAPIDS_CUPY = SpecifierSet(">=14.0.1,!=14.1.0")
RAPIDS = "26.10"


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def extra(name: str) -> dict[str, Requirement]:
    return {Requirement(r).name: Requirement(r) for r in project()["optional-dependencies"][name]}


def conda() -> dict[str, str]:
    """environment.yml's conda dependencies: name -> version spec as written."""
    specs = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^  - ([A-Za-z0-9_.-]+)\s*([=<>!].*)?$", line)
        if m:
            specs[m.group(1)] = (m.group(2) or "").strip()
    return specs


def test_gpu_extras_pin_the_rapids_release_and_its_cupy():
    for cuda in ("12", "13"):
        reqs = extra(f"cuda{cuda}")
        assert reqs[f"cupy-cuda{cuda}x"].specifier == RAPIDS_CUPY
        assert reqs[f"cudf-cu{cuda}"].specifier == SpecifierSet(f"=={RAPIDS}.*")
        assert reqs[f"cuml-cu{cuda}"].specifier == SpecifierSet(f"=={RAPIDS}.*")


def test_dask_cuda_is_in_a_gpu_dask_extra():
    for cuda in ("12", "13"):
        reqs = project()["optional-dependencies"][f"dask-cuda{cuda}"]
        assert f"gpuseg[dask,cuda{cuda}]" in reqs
        assert extra(f"dask-cuda{cuda}")["dask-cuda"].specifier == SpecifierSet(f"=={RAPIDS}.*")


def test_environment_yml_agrees_with_the_extras():
    env = conda()
    for name in ("cudf", "cuml", "dask-cuda"):
        assert env[name] == f"={RAPIDS}", name
    assert SpecifierSet(env["cupy"]) == RAPIDS_CUPY
    assert SpecifierSet(env["pandas"]) == SpecifierSet(">=3.0,<3.1")  # cudf 26.10's own pin
    wanted = [Requirement(r) for r in project()["dependencies"]]
    wanted += [*extra("dask").values(), *extra("test").values()]
    for req in wanted:
        assert req.name in env, f"{req.name} is missing from environment.yml"
        assert SpecifierSet(env[req.name]) == req.specifier, req.name


def quick_start_commands() -> list[str]:
    """The README's Quick start commands, read as .ci/run reads them: the first fenced block after the heading."""
    lines = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].splitlines()
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    return [line for line in lines[fences[0] + 1:fences[1]] if line.strip()]


def test_ci_runs_the_slow_tests():
    # `slow` is for a quick run while developing (pytest -m "not slow"); CI runs the Quick start,
    # whose pytest must select every test: nothing in it, in addopts or in .ci/run deselects by marker.
    tests = [c for c in quick_start_commands() if "pytest" in c]
    assert tests, quick_start_commands()
    assert all(" -m " not in f" {c} " and "slow" not in c for c in tests), tests
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-m" not in ini["addopts"].split() and "slow" not in ini["addopts"]
    assert any(m.startswith("slow:") for m in ini["markers"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "PYTEST_ADDOPTS" not in ci and "not slow" not in ci
    assert "not slow" in (ROOT / "README.md").read_text()  # the fast run is documented
    marked = sum(p.read_text().count("@pytest.mark.slow") for p in (ROOT / "tests").glob("test_*.py"))
    assert marked >= 5
