"""Cohort runs in the background of the app's server process, independent of any browser session.

A run started from the failure gallery keeps going when its tab is closed or the user switches
pages; its progress is in the run folder's ``progress.json`` (:func:`medseg_core.cohort.read_progress`),
so any session shows it. Each finished (model, option set, case) is kept in the run folder, so a run
interrupted by a server restart continues where it stopped when started again on the same folder.
"""

from __future__ import annotations

import json
import threading
import traceback
from pathlib import Path

_JOBS: dict[str, threading.Thread] = {}
_LOCK = threading.Lock()


def is_running(out: str | Path) -> bool:
    t = _JOBS.get(str(Path(out).resolve()))
    return bool(t and t.is_alive())


def start_cohort(
    out: str | Path,
    data_root: str | Path,
    adapter: str,
    models: list[str],
    option_sets: dict,
    mc_samples: int = 0,
    max_cases: int | None = None,
    synthetic: dict | None = None,
) -> bool:
    """Start (or resume) a cohort run in a background thread; False when one is already running on
    ``out``. Failures end up in ``progress.json`` as one sentence (state ``failed``)."""
    from . import cohort as C

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = str(Path(out).resolve())
    with _LOCK:
        if is_running(out):
            return False

        def work() -> None:
            try:
                from .data import datasets as D

                if synthetic:
                    from .data.make_synthetic import ensure_synthetic

                    ensure_synthetic(data_root, synthetic)
                cases = D.ADAPTERS[adapter](data_root)[:max_cases]
                C.run_cohort(
                    cases,
                    models,
                    option_sets,
                    out,
                    mc_samples=mc_samples,
                    dataset={"adapter": adapter, "root": str(data_root), "synthetic": synthetic},
                )
            except Exception as e:  # noqa: BLE001 - reported to the user, the server keeps running
                from .io.errors import InputError

                msg = str(e) if isinstance(e, InputError) else f"The run stopped: {type(e).__name__}: {e}"
                C.write_progress(out, state="failed", done=0, total=0, message=msg)
                traceback.print_exc()

        C.write_progress(out, state="running", done=0, total=0, message="starting")
        Path(out, "job.json").write_text(
            json.dumps(
                {
                    "data_root": str(data_root),
                    "adapter": adapter,
                    "models": list(models),
                    "option_sets": option_sets,
                    "mc_samples": mc_samples,
                    "max_cases": max_cases,
                    "synthetic": synthetic,
                },
                indent=1,
            )
        )
        t = threading.Thread(target=work, name=f"cohort:{Path(out).name}", daemon=True)
        _JOBS[key] = t
        t.start()
        return True


def unfinished(directory: str | Path | None = None) -> list[Path]:
    """Run folders started from the app that have not finished (running here, or stopped by a server
    restart: those can be resumed)."""
    from . import cohort as C

    d = Path(directory) if directory else C.runs_dir()
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir()):
        prog = C.read_progress(p) if p.is_dir() else None
        if prog and prog.get("state") in ("running", "failed") and (p / "job.json").exists():
            out.append(p)
    return out


def dismiss(out: str | Path) -> None:
    """A failed run's message was read: it leaves the list of unfinished runs (its folder stays)."""
    from . import cohort as C

    prog = C.read_progress(out) or {}
    C.write_progress(
        Path(out),
        state="dismissed",
        done=prog.get("done", 0),
        total=prog.get("total", 0),
        message=prog.get("message", ""),
    )


def resume(out: str | Path) -> bool:
    """Start an interrupted run again with its recorded parameters; finished cases are kept."""
    job = json.loads(Path(out, "job.json").read_text())
    return start_cohort(out, **job)


def wait(out: str | Path, timeout: float | None = None) -> None:
    t = _JOBS.get(str(Path(out).resolve()))
    if t:
        t.join(timeout)
