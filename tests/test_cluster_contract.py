"""The Step contract: every step honours it, the driver needs nothing else, the package has no import cycle."""

from __future__ import annotations

import ast
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest

import gpuseg
from gpuseg.cluster.contract import Partials, Step, reduce_partials
from gpuseg.cluster.engine import make_step
from gpuseg.cluster.lloyd import lloyd
from gpuseg.cluster.steps import ChunkedStep, StreamedStep, chunked_step


def test_partials_add_and_refuse_to_mix_deltas_with_sums():
    a = Partials(np.ones((2, 3)), np.ones(2), 1.0, 3)
    b = Partials(np.ones((2, 3)), np.ones(2), 2.0, None)
    total = reduce_partials([a, a])
    assert total.n_changed == 6 and total.inertia == 2.0 and not total.delta
    assert (a + b).n_changed is None  # one block without labels: no count for the whole
    with pytest.raises(ValueError, match="cannot add full partial sums to a change"):
        a + Partials(np.ones((2, 3)), np.ones(2), 1.0, 0, delta=True)


def test_every_step_satisfies_the_protocol(rng):
    X = rng.normal(size=(100, 3))
    with ExitStack() as stack:
        steps = [chunked_step(X, stack, 4), make_step(X, 4, "streamed", stack, stream_rows=30, device=np).step]
        assert isinstance(steps[1], StreamedStep) and steps[1].name == "streamed-generic"
        for step in steps:
            assert isinstance(step, Step), type(step)
            assert step.count() == 100 and step.dim() == 3
            np.testing.assert_array_equal(step.get_subset(np.array([5, 1])), X[[5, 1]])
            labels, sqdist = step.assign(X[:4])
            assert labels.shape == sqdist.shape == (100,)
    from gpuseg.dask_pipeline import DaskStep
    from gpuseg.cluster.fused import FusedStep
    for cls in (DaskStep, FusedStep):
        missing = [m for m in ("count", "dim", "get_subset", "partials", "labels", "restart", "assign", "inertia",
                               "name")
                   if not hasattr(cls, m)]
        assert not missing, (cls, missing)


class Blocks:
    """A step that owns its points as a list of blocks, not one array: the driver must not care."""

    name = "blocks"
    xp = np

    def __init__(self, X, size):
        self.parts = [X[s:s + size] for s in range(0, len(X), size)]

    def count(self):
        return sum(len(p) for p in self.parts)

    def dim(self):
        return self.parts[0].shape[1]

    def get_subset(self, indices):
        whole = np.concatenate(self.parts)
        return whole if indices is None else whole[indices]

    def labels(self):
        return None

    def restart(self):
        pass

    def partials(self, centers, delta=False):
        return reduce_partials(ChunkedStep(p, 64, track_labels=False).partials(centers) for p in self.parts)

    def assign(self, centers):
        pairs = [ChunkedStep(p, 64).assign(centers) for p in self.parts]
        return np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])

    def inertia(self, centers):
        return float(self.assign(centers)[1].sum())


def test_driver_runs_any_step_that_owns_its_data(rng):
    X = np.concatenate([rng.normal(c, 1, (300, 2)) for c in (0, 8, 16)])
    init = X[[0, 1, 2]].copy()  # all from the first blob: the others must be found
    got = lloyd(Blocks(X, 97), init, tol=0)
    want = lloyd(ChunkedStep(X, 97), init, tol=0)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_allclose(got.centers, want.centers, rtol=1e-12)
    assert got.inertia == pytest.approx(want.inertia, rel=1e-12)
    # Without labels the driver stops on the tolerance; with them, on unchanged labels.
    assert got.history[-1]["n_changed"] == 0 and want.history[-1]["n_changed"] == 0


def _imports(path: Path, package: str) -> set[str]:
    """Modules of gpuseg that ``path`` imports, at any depth of the file."""
    found = set()
    parts = package.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[:len(parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("gpuseg"):
                found.add(mod)
                found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gpuseg"))
    return found


def test_cluster_package_has_no_import_cycle():
    root = Path(gpuseg.__file__).parent
    modules = {}
    for path in sorted((root / "cluster").glob("*.py")):
        name = "gpuseg.cluster" if path.stem == "__init__" else f"gpuseg.cluster.{path.stem}"
        modules[name] = path, "gpuseg.cluster"  # the package relative imports start from
    graph = {name: {m for m in _imports(path, pkg) if m in modules and m != name and m != "gpuseg.cluster"}
             for name, (path, pkg) in modules.items()}
    # Depth-first search for a back edge.
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    # And nothing in the package reaches back up into the pipeline.
    for name, (path, pkg) in modules.items():
        upward = {m for m in _imports(path, pkg) if not m.startswith("gpuseg.cluster")}
        assert upward <= {"gpuseg.backend", "gpuseg.backend._import", "gpuseg.backend.get_namespace",
                          "gpuseg.backend.to_numpy", "gpuseg.backend.argsort_stable",
                          "gpuseg.backend.default_workers", "gpuseg.backend.bincount",
                          "gpuseg.backend.scatter_add", "gpuseg.backend.short_error"}, (name, upward)
