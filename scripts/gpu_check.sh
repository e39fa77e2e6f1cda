#!/usr/bin/env bash
# The one device check: run on a lent GPU machine from the repository root.
#   1. the whole test suite (or $TESTS), GPU tests included (marker "gpu");
#   2. the Lloyd micro-benchmark (fused kernel, generic CuPy step, CPU);
#   3. `gpuseg segment` on ROWS generated transactions, --backend cupy vs cpu.
# Works offline from the checkout: it needs python3 with numpy, cupy, pyarrow,
# typer, rich, scikit-learn, threadpoolctl, pytest and hypothesis. Each step
# has its own time limit so that what finished is kept. Results land in
# $OUT (default benchmarks/results), merged into gpu-<device>.json.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
ROWS=${ROWS:-1e8}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
stamp() { echo "== $(( $(date +%s) - start ))s: $*"; }

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import sys, numpy, cupy, pyarrow, sklearn; print(sys.version.split()[0], 'numpy', numpy.__version__, 'cupy', cupy.__version__, 'pyarrow', pyarrow.__version__, 'sklearn', sklearn.__version__)" | tee -a "$OUT/nvidia-smi.txt"

stamp "tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -rs ${TESTS:-tests} 2>&1 | tee "$OUT/pytest.log" | tail -25

if [ "${LLOYD:-1}" != "0" ]; then  # LLOYD=0 skips the micro-benchmark
  stamp "Lloyd micro-benchmark"
  timeout 120 python3 benchmarks/bench_lloyd_gpu.py --out "$OUT/lloyd.json" 2>&1 | tee "$OUT/bench.log"
fi

if [ "$ROWS" != "0" ]; then  # ROWS=0 skips the pipeline run
  stamp "pipeline on $ROWS transactions"
  timeout 220 python3 benchmarks/bench_pipeline_gpu.py --rows "$ROWS" --out "$OUT/pipeline.json" 2>&1 | tee -a "$OUT/bench.log"
fi

stamp "merge"
python3 - "$OUT" <<'PY'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
lloyd = json.loads((out / "lloyd.json").read_text()) if (out / "lloyd.json").exists() else {}
result = {"device": lloyd.get("device"), "bandwidth_gbs": lloyd.get("bandwidth_gbs"),
          "cases": lloyd.get("cases", [])}
if (out / "pipeline.json").exists():
    result["pipeline"] = json.loads((out / "pipeline.json").read_text())
device = result["device"] or (result.get("pipeline", {}).get("runs", {}).get("cupy", {}).get("device"))
if not device and (out / "nvidia-smi.txt").exists():
    device = (out / "nvidia-smi.txt").read_text().splitlines()[1].split(",")[0]
result["device"] = device
name = re.sub(r"[^a-z0-9]+", "-", (device or "unknown").split("(")[0].strip().lower()).strip("-")
(out / f"gpu-{name}.json").write_text(json.dumps(result, indent=2))
for f in ("lloyd.json", "pipeline.json"):
    (out / f).unlink(missing_ok=True)
print(f"wrote {out}/gpu-{name}.json")
for c in result["cases"]:
    print(f"{c['impl']:8s} n={c['n']:>11,} d={c['d']:>2} k={c['k']:>2} {c['ms_per_iter']:9.3f} ms/iter"
          + (f"  {c['pct_of_floor']:.0f}% of floor" if 'pct_of_floor' in c else ""))
PY
stamp "done"
