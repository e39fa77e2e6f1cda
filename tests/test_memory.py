"""The device memory planner's arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from gpuseg.memory import fit_bytes, plan_fit, row_bytes


def test_fit_bytes_worked_by_hand():
    # n=1000, d=3 float32 -> rows padded to 4 values (16 B): 16_000 B of data.
    # k=5: 2 + floor(ln 5) = 3 trial rows; seeding = 1000 * (3*4 + 3*4 + 2*8) = 40_000;
    # assignment = 1000 * (4 + 4 + 8) = 16_000; partials: 1 block * (5*4 + 1) * 8 = 168.
    assert fit_bytes(1000, 3, 5, 4) == 16_000 + 40_000 + 168


def test_fit_bytes_grows_linearly_in_n():
    a, b = fit_bytes(10**6, 8, 16), fit_bytes(2 * 10**6, 8, 16)
    assert b == pytest.approx(2 * a, rel=1e-3)
    assert fit_bytes(10**6, 8, 16, 8) > a  # float64 needs more


def test_plan_on_device_when_it_fits():
    need = fit_bytes(10**7, 8, 16)
    plan = plan_fit(10**7, 8, 16, np.float32, bytes_free=2 * need)
    assert plan.mode == "device" and plan.stream_rows is None
    assert plan.bytes_needed == need
    assert "GiB" in plan.reason


def test_plan_streams_when_it_does_not_fit():
    need = fit_bytes(10**8, 8, 16)
    free = need // 10
    plan = plan_fit(10**8, 8, 16, np.float32, bytes_free=free)
    assert plan.mode == "streamed"
    # Blocks fit a quarter of the usable memory, with room for per-row buffers.
    assert plan.stream_rows * row_bytes(8) <= free * 0.85 / 4
    assert plan.stream_rows > 0
    assert "streaming blocks" in plan.reason
    assert plan.to_dict()["mode"] == "streamed"
