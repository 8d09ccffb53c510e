"""The worklist (issue 18 item 3): the cases of a cohort run or a dataset folder with their review status.

No Streamlit here; ``pages/worklist.py`` draws it.

**How a verdict finds its case.** The Segment & review page records a verdict under the session's
case key, :func:`medseg_core.review.case_key`: a content hash (BLAKE2b, 12 bytes) of the loaded
volume's voxels, affine and modality, never a file name or a patient identifier. A cohort run or a
dataset folder names its cases by the dataset's case id instead. The worklist therefore computes,
once per case, the same content hash of the volume that "Open" loads (:func:`case_keys`) and keeps
the mapping case id -> key in ``case_keys.json`` beside the run's tables (a dataset folder's mapping is
kept by the caller, in memory). A cached key is recomputed when the case's image file changed (its
size and modification time are stored with it). So a verdict saved on a case opened from the
worklist, from the failure gallery or uploaded by hand on Load case (the same voxels) shows up in the
worklist; a case whose voxels differ (another resampling, another file) is another case.

**Status.** A case's status is the verdict of its latest whole-case row (``slice`` null), as
:meth:`medseg_core.store.Store.status`; slice verdicts are counted beside it. The reviewer, time and
model shown are those of the case's latest verdict of any kind.

**Filters.** Status: any of the chosen statuses. Model and reviewer: the case has at least one
verdict recorded with that model / by that reviewer (name or e-mail), so "cases Dr A reviewed" keeps
a case Dr B looked at afterwards; a case not reviewed has no model or reviewer and drops out when
either filter is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

#: Worklist statuses, in the order the filter offers them.
STATUSES = ("not_reviewed", "accept", "needs_correction", "reject")
STATUS_WORDS = {
    "not_reviewed": "not reviewed",
    "accept": "accepted",
    "needs_correction": "needs correction",
    "reject": "rejected",
}
#: Badge colours (Streamlit markdown colour names) of the statuses, as on the gallery's thumbnails.
STATUS_COLOURS = {"not_reviewed": "gray", "accept": "green", "needs_correction": "orange", "reject": "red"}
KEYS_FILE = "case_keys.json"
#: Columns of a run's verdict export: the store's columns with the dataset's case id in front.
EXPORT_EXTRA = ("case",)


def _stamp(path: str | Path | None) -> list | None:
    """(size, mtime_ns) of a case's image file or folder: a cached key is trusted while this holds."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except (OSError, TypeError):
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def read_key_cache(path: str | Path | None) -> dict:
    if path is None:
        return {}
    try:
        d = json.loads(Path(path).read_text())
        return d.get("keys", {}) if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def case_keys(
    cases: dict,
    ids: Iterable[str] | None = None,
    cache_file: str | Path | None = None,
    cache: dict | None = None,
    load: Callable[[str], tuple] | None = None,
) -> dict[str, str]:
    """case id -> :func:`medseg_core.review.case_key` of the volume that opening the case loads.

    ``cases``: case id -> :class:`medseg_core.data.datasets.Case`; ``ids`` (default all) the ones
    wanted. Keys come from ``cache`` / ``cache_file`` when the image's (size, mtime) still match,
    otherwise the case is loaded (``load(case_id)``, default ``cases[case_id].load()``) and hashed;
    new keys are written back to ``cache_file`` (atomically) and ``cache``."""
    from .review import case_key

    ids = list(cases) if ids is None else [i for i in ids if i in cases]
    stored = dict(read_key_cache(cache_file)) if cache_file is not None else {}
    if cache is not None:
        stored.update(cache)
    out, changed = {}, False
    for cid in ids:
        stamp = _stamp(getattr(cases[cid], "image", None))
        hit = stored.get(cid)
        if isinstance(hit, dict) and hit.get("key") and (hit.get("stamp") == stamp):
            out[cid] = hit["key"]
            continue
        vol = (load(cid) if load is not None else cases[cid].load())[0]
        out[cid] = case_key(vol)
        stored[cid] = {"key": out[cid], "stamp": stamp}
        changed = True
    if cache is not None:
        cache.update({k: v for k, v in stored.items()})
    if changed and cache_file is not None:
        write_key_cache(cache_file, stored)
    return out


def key_entry(case: Any, key: str) -> dict:
    """The cache entry of one case: its content key and its image's (size, mtime) stamp."""
    return {"key": key, "stamp": _stamp(getattr(case, "image", None))}


def write_key_cache(path: str | Path, entries: dict[str, dict]) -> None:
    """Write case id -> :func:`key_entry` to ``path`` atomically (a read-only folder: not written,
    the keys are recomputed next time)."""
    p = Path(path)
    try:
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps({"version": 1, "keys": entries}, indent=0, sort_keys=True))
        tmp.replace(p)
    except OSError:
        pass


def run_key_file(run_path: str | Path) -> Path:
    return Path(run_path) / KEYS_FILE


def status_rows(case_ids: list[str], keys: dict[str, str], verdicts: list[dict]) -> list[dict]:
    """One worklist row per case, in ``case_ids`` order: position (1-based), case id, key, status,
    number of slice verdicts, and the reviewer, time (UTC), model and note of its latest verdict.

    ``verdicts``: store rows (any order; the latest is the highest ``id``)."""
    by_key: dict[str, list[dict]] = {}
    for v in verdicts:
        by_key.setdefault(v["case_key"], []).append(v)
    rows = []
    for pos, cid in enumerate(case_ids, 1):
        key = keys.get(cid)
        vs = sorted(by_key.get(key, []) if key is not None else [], key=lambda v: v["id"], reverse=True)
        case_level = [v for v in vs if v.get("slice") is None]
        latest = vs[0] if vs else None
        rows.append(
            {
                "position": pos,
                "case": cid,
                "key": key,
                "status": case_level[0]["verdict"] if case_level else "not_reviewed",
                "slice_verdicts": sum(v.get("slice") is not None for v in vs),
                "verdicts": len(vs),
                "reviewer": (latest["reviewer_name"] if latest else ""),
                "reviewer_email": (latest.get("reviewer_email") or "") if latest else "",
                "time_utc": latest["time_utc"] if latest else None,
                "model": (latest.get("model") or "") if latest else "",
                "note": (latest.get("note") or "") if latest else "",
                "models_seen": sorted({str(v["model"]) for v in vs if v.get("model")}),
                "reviewers_seen": sorted(
                    {x for v in vs for x in (v.get("reviewer_name"), v.get("reviewer_email")) if x}
                ),
            }
        )
    return rows


def filter_rows(
    rows: list[dict],
    statuses: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    reviewers: Iterable[str] | None = None,
) -> list[dict]:
    """Rows whose status is one of ``statuses`` and that have a verdict with one of ``models`` and one
    by one of ``reviewers`` (module docstring); an empty or None filter keeps everything."""
    statuses, models, reviewers = set(statuses or ()), set(models or ()), set(reviewers or ())
    return [
        r
        for r in rows
        if (not statuses or r["status"] in statuses)
        and (not models or models & set(r["models_seen"]))
        and (not reviewers or reviewers & set(r["reviewers_seen"]))
    ]


def neighbour(ids: list[str], current: str, step: int) -> str | None:
    """The case ``step`` places from ``current`` in the (filtered) list ``ids``, None past either end."""
    if current not in ids:
        return None
    j = ids.index(current) + step
    return ids[j] if 0 <= j < len(ids) else None


def table(rows: list[dict], titles: dict[str, str] | None = None) -> list[dict]:
    """Rows for display: words, not codes; times as 'YYYY-MM-DD HH:MM' UTC; models by ``titles``
    (name -> the title a person reads) where given."""
    titles = titles or {}
    return [
        {
            "#": r["position"],
            "case": r["case"],
            "status": STATUS_WORDS[r["status"]],
            "slice verdicts": r["slice_verdicts"],
            "reviewer": r["reviewer"],
            "time (UTC)": r["time_utc"].strftime("%Y-%m-%d %H:%M") if r["time_utc"] else "",
            "model": titles.get(r["model"], r["model"]),
            "note": r["note"],
        }
        for r in rows
    ]


def case_verdicts(store: Store, keys: dict[str, str]) -> list[dict]:
    """The store's verdicts of these cases (newest first), each with the dataset's case id as ``case``."""
    by_key: dict[str, str] = {}
    for cid, k in keys.items():
        by_key.setdefault(k, cid)
    rows = store.verdicts_for(list(by_key))
    return [{"case": by_key[r["case_key"]], **r} for r in rows]


def export_bytes(rows: list[dict], fmt: str = "csv") -> bytes:
    """Verdict rows as CSV (the store's columns, with ``case`` first when present) or JSON."""
    from .store import VERDICT_COLUMNS, to_csv, to_json

    if fmt == "json":
        return to_json(rows)
    cols = ([*EXPORT_EXTRA] if rows and "case" in rows[0] else []) + VERDICT_COLUMNS
    return to_csv(rows, cols)


def statuses_by_case_and_model(keys: dict[str, str], verdicts: list[dict]) -> dict[tuple[str, str], str]:
    """(case id, model) -> status of the latest whole-case verdict recorded on that model's result: the
    gallery's per-thumbnail badge and filter (a verdict on one model's mask says nothing of another's).
    Pairs without such a verdict are absent (not reviewed)."""
    by_key: dict[str, list[dict]] = {}
    for v in verdicts:
        if v.get("slice") is None and v.get("model"):
            by_key.setdefault(v["case_key"], []).append(v)
    out: dict[tuple[str, str], str] = {}
    for cid, key in keys.items():
        for v in sorted(by_key.get(key, []), key=lambda v: v["id"]):  # the latest wins
            out[(cid, str(v["model"]))] = v["verdict"]
    return out
