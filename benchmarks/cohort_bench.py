"""Cohorts at scale (issue 20 item 4): the failure gallery's work on a generated cohort of 300 000
slice rows (4 models x 3 option sets x 500 cases x 50 slices, :func:`medseg_core.cohort_store.synthetic_run`).

Timed (medians): loading the run (Parquet -> columnar table), and one gallery refresh = the tag counts
of the whole run + filter by tags + models + option set + Dice* range + uncertainty range + sort +
the first 12 rows as dicts for the thumbnails (target <= 200 ms), for each sort order. Called by
``benchmarks/run_all.py`` (``--only cohort``) or alone: ``python benchmarks/cohort_bench.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medseg_core import cohort as C  # noqa: E402
from medseg_core import cohort_store as S  # noqa: E402


def _median(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def cohort_bench(quick: bool = False) -> dict:
    repeats = 3 if quick else 9
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        run_dir = S.synthetic_run(Path(d) / "cohort_300k")
        gen_s = time.perf_counter() - t
        size_mb = sum(p.stat().st_size for p in run_dir.iterdir()) / 2**20
        load_s, run = _median(lambda: C.load_run(run_dir), max(3, repeats // 3))
        slices = run.slices
        filt = dict(
            tags=["side_swap", "double_ovary", "under_segmentation"],
            models=["model_0", "model_2"],
            sets=["orig"],
            dice_range=(0.0, 0.8),
            uncertainty_range=(0.0, 0.6),
        )

        def refresh(how):
            counts = C.tag_counts(C.filter_slices(slices))
            rows = C.sort_slices(C.filter_slices(slices, **filt), how)
            return counts, len(rows), rows[:12]

        steps = {
            "counts (whole run)": lambda: C.tag_counts(C.filter_slices(slices)),
            "filter": lambda: C.filter_slices(slices, **filt),
            "sort (Dice)": lambda: C.sort_slices(C.filter_slices(slices, **filt), "Dice (worst first)"),
            # the Uncertainty vs Dice tab on the whole run: AUROC of every slice, 4000 points drawn
            "uncertainty scatter (whole run)": lambda: C.uncertainty_scatter(C.filter_slices(slices)),
        }
        parts = {k: round(_median(f, repeats)[0] * 1000, 1) for k, f in steps.items()}
        per_sort = {}
        for how in C.SORT_KEYS:
            s, (counts, n, first) = _median(lambda how=how: refresh(how), repeats)
            per_sort[how] = round(s * 1000, 1)
        return {
            "rows": len(slices),
            "matching": n,
            "generate_s": round(gen_s, 2),
            "store_mb": round(size_mb, 1),
            "load_s": round(load_s, 3),
            "steps_ms": parts,
            "refresh_ms": per_sort,
            "refresh_worst_ms": max(per_sort.values()),
            "counts": counts,
            "filter": {k: list(v) if isinstance(v, tuple) else v for k, v in filt.items()},
        }


if __name__ == "__main__":
    print(json.dumps(cohort_bench("--quick" in sys.argv), indent=1))
