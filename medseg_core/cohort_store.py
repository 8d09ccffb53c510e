"""The cohort run's tables as a typed columnar store (issue 20 item 4, "cohorts at scale").

A run folder keeps its rows in Parquet (``pyarrow``):

* ``slices.parquet``: one row per (model, option set, case, axial slice);
* ``cases.parquet``: one row per (model, option set, case).

The schema is *declared*, never guessed from the values: :data:`SLICE_SCHEMA` and
:data:`CASE_SCHEMA` take the fields of the engine's records (:class:`medseg_core.engine.SliceRecord`,
:class:`~medseg_core.engine.CaseRecord`: ``str`` -> string, ``int`` -> int64, ``float`` and
``float | None`` -> float64 (null where absent), ``bool`` -> bool, ``tuple[str, ...]`` -> list of
strings) plus the cohort's own columns (:data:`COHORT_COLUMNS`). So a case id is always a string
("007" stays "007"), a number is always a number and ``tags`` is a list of tag names. The CSV files
(``slices.csv``, ``cases.csv``, ``tags`` joined with ';') are exports for people and spreadsheets;
a run written before the Parquet store (CSV only) is read once with the same declared types
(:func:`read_csv_typed`, no ``float()`` guessing) and its Parquet written beside it.

In memory a table is a :class:`RowTable`: a pandas DataFrame (string columns categorical, ``tags``
as the categorical ';'-joined string) and a boolean matrix rows x tags built once. The gallery's
filters, sorts and tag counts are numpy operations on those columns (:meth:`RowTable.filter`,
:meth:`RowTable.sort`, :meth:`RowTable.tag_counts`); dict rows are made only for what is shown
(``table[:12]``). A RowTable is also a read-only sequence of dict rows, so code written for lists
of dicts (iteration, ``len``, ``rows[0]``) keeps working on small runs.

:func:`synthetic_run` writes a realistic run of any size (models x option sets x cases x slices,
tag mix as in real runs) for the benchmark (``benchmarks/run_all.py --only cohort``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from . import analysis as A

_ARROW = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "float | None": pa.float64(),
    "bool": pa.bool_(),
    "tuple[str, ...]": pa.list_(pa.string()),
}

#: Columns the cohort adds to the engine's records.
COHORT_COLUMNS = {
    "model": pa.string(),
    "set": pa.string(),
    "slice_number": pa.int64(),
    "seconds": pa.float64(),
    "p_malignant": pa.float64(),
    "malignant": pa.int64(),
}
#: Columns of the small summary tables (``table1.csv``, ``comparisons.csv``); ``mean_*`` and
#: ``sd_*`` columns are float64 by rule.
SUMMARY_COLUMNS = {
    "a": pa.string(),
    "b": pa.string(),
    "metric": pa.string(),
    "n_slices": pa.int64(),
    "better": pa.int64(),
    "worse": pa.int64(),
    "same": pa.int64(),
    "wilcoxon_p": pa.float64(),
    "dice_orig": pa.float64(),
    "dice_masked": pa.float64(),
    "delta_dice": pa.float64(),
}


def _record_types(cls) -> dict[str, pa.DataType]:
    return {f.name: _ARROW[str(f.type)] for f in dataclasses.fields(cls)}


def _schemas() -> tuple[pa.Schema, pa.Schema]:
    from .engine import CaseRecord, SliceRecord

    s = {"model": pa.string(), "set": pa.string(), **_record_types(SliceRecord)}
    s = dict(list(s.items())[:6] + [("slice_number", pa.int64())] + list(s.items())[6:])  # after 'slice'
    c = {"model": pa.string(), "set": pa.string(), **_record_types(CaseRecord), "seconds": pa.float64()}
    return pa.schema(list(s.items())), pa.schema(list(c.items()))


SLICE_SCHEMA, CASE_SCHEMA = _schemas()
_DECLARED = {
    **{f.name: f.type for f in CASE_SCHEMA},
    **{f.name: f.type for f in SLICE_SCHEMA},
    **COHORT_COLUMNS,
    **SUMMARY_COLUMNS,
}


def column_type(name: str) -> pa.DataType:
    """The declared type of a column; columns nobody declared are strings (never guessed)."""
    if name in _DECLARED:
        return _DECLARED[name]
    if name.startswith(("mean_", "sd_")):
        return pa.float64()
    return pa.string()


def undeclared(columns: Iterable[str]) -> list[str]:
    """Columns that would fall back to strings (a test keeps this empty for what the cohort writes)."""
    return [c for c in columns if c not in _DECLARED and not c.startswith(("mean_", "sd_"))]


# ----------------------------------------------------------------------------- writing
def _tags_list(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [t for t in v.split(";") if t]
    return [str(t) for t in v]


def arrow_table(rows: list[dict], schema: pa.Schema | None = None) -> pa.Table:
    """Dict rows as an Arrow table with the declared types (``schema`` first, in its order, then any
    further column of the rows with :func:`column_type`). ``tags`` may be a list or a ';' string."""
    keys: list[str] = [f.name for f in schema] if schema is not None else []
    for r in rows:
        keys += [k for k in r if k not in keys]
    seen = set().union(*rows) if rows else set(keys)
    if "slice" in seen:  # every table carries the 1-based slice_number beside slice (medseg_core.tables)
        seen.add("slice_number")
        if "slice_number" not in keys:
            keys.insert(keys.index("slice") + 1, "slice_number")
    keys = [k for k in keys if k in seen]
    cols = {}
    for k in keys:
        t = column_type(k)
        vals = [r.get(k) for r in rows]
        if k == "slice_number":
            vals = [
                v if v not in (None, "") else (None if r.get("slice") in (None, "") else int(r["slice"]) + 1)
                for v, r in zip(vals, rows, strict=True)
            ]
        if k == "tags":
            vals = [_tags_list(v) for v in vals]
        elif pa.types.is_string(t):
            vals = [None if v is None else str(v) for v in vals]
        elif pa.types.is_floating(t):
            vals = [None if v is None or v == "" else float(v) for v in vals]
        elif pa.types.is_integer(t):
            vals = [None if v is None or v == "" else int(v) for v in vals]
        cols[k] = pa.array(vals, type=t)
    return pa.table(cols) if cols else pa.table({})


def write_parquet(path: str | Path, rows_or_table: list[dict] | pa.Table, schema: pa.Schema | None = None) -> Path:
    """Write rows (or an Arrow table) to ``path`` atomically (a temporary file, then rename)."""
    t = rows_or_table if isinstance(rows_or_table, pa.Table) else arrow_table(rows_or_table, schema)
    path = Path(path)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(t, tmp, compression="zstd")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- reading
def read_csv_typed(path: str | Path) -> pa.Table:
    """A CSV written by medseg, typed by the declared schema (:func:`column_type`): case ids stay
    strings, empty cells of number columns are null, ``tags`` becomes a list. A file without
    ``slice_number`` gets it (``slice`` + 1, see :mod:`medseg_core.tables`)."""
    with open(path, newline="") as fh:
        header = next(iter(csv.reader(fh)), [])
    types = {k: (pa.string() if k == "tags" else column_type(k)) for k in header}
    t = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            strings_can_be_null=False,
            null_values=["", "None"],
            true_values=["True", "true", "1"],
            false_values=["False", "false", "0"],
        ),
    )
    if "tags" in t.column_names:
        t = t.set_column(
            t.column_names.index("tags"),
            "tags",
            pa.array([_tags_list(v) for v in t["tags"].to_pylist()], pa.list_(pa.string())),
        )
    if "slice" in t.column_names and "slice_number" not in t.column_names and pa.types.is_integer(t["slice"].type):
        import pyarrow.compute as pc

        t = t.add_column(t.column_names.index("slice") + 1, "slice_number", pc.add(t["slice"], 1))
    return t


def read_table(run: str | Path, name: str) -> pa.Table:
    """``<run>/<name>.parquet``; for a run written before the store, its ``<name>.csv`` read once with
    the declared types and kept as Parquet beside it (when the folder is writable)."""
    run = Path(run)
    pqf, csvf = run / f"{name}.parquet", run / f"{name}.csv"
    if pqf.exists():  # string columns straight into dictionary arrays (pandas categoricals)
        names = pq.read_schema(pqf).names
        return pq.read_table(
            pqf, read_dictionary=[k for k in names if k != "tags" and pa.types.is_string(column_type(k))]
        )
    t = read_csv_typed(csvf)
    try:
        write_parquet(pqf, t)
    except OSError:
        pass
    return t


def table_mtime(run: str | Path) -> float:
    """When the run's slice table last changed (the gallery's cache key)."""
    for name in ("slices.parquet", "slices.csv"):
        p = Path(run) / name
        if p.exists():
            return p.stat().st_mtime
    raise FileNotFoundError(f"{run} has no slices table")


# ----------------------------------------------------------------------------- the in-memory table
def _frame(t: pa.Table) -> pd.DataFrame:
    """Arrow -> pandas: string columns categorical (fast ``isin``, little memory), ``tags`` as the
    categorical ';'-joined string."""
    import pyarrow.compute as pc

    cols = {}
    for name in t.column_names:
        c = t[name]
        if name == "tags" and pa.types.is_list(c.type):
            c = pc.binary_join(pc.fill_null(c, pa.scalar([], pa.list_(pa.string()))), ";")
        if pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
            c = c.dictionary_encode()
        cols[name] = c
    return pa.table(cols).to_pandas() if cols else pd.DataFrame()


class RowTable:
    """A cohort table in columns, with the gallery's filter, sort and counts (module docstring)."""

    def __init__(self, df: pd.DataFrame, tag_matrix: np.ndarray | None = None, tag_names: list | None = None) -> None:
        self.frame = df.reset_index(drop=True)
        if tag_matrix is not None:
            self.__dict__["_tags"] = (tag_matrix, list(tag_names or []))

    # construction
    @classmethod
    def from_arrow(cls, t: pa.Table) -> RowTable:
        return cls(_frame(t))

    @classmethod
    def from_records(cls, rows: list[dict]) -> RowTable:
        return cls.from_arrow(arrow_table(list(rows)))

    # the tags as a boolean matrix (rows x tag names), built from the few distinct tag strings
    @cached_property
    def _tags(self) -> tuple[np.ndarray, list[str]]:
        n = len(self.frame)
        if "tags" not in self.frame or n == 0:
            return np.zeros((n, len(A.TAGS)), bool), list(A.TAGS)
        col = self.frame["tags"]
        cats = [str(c) for c in col.cat.categories] if isinstance(col.dtype, pd.CategoricalDtype) else None
        if cats is None:
            col = col.astype("category")
            cats = [str(c) for c in col.cat.categories]
        names = list(A.TAGS) + sorted({t for c in cats for t in c.split(";") if t} - set(A.TAGS))
        per_cat = np.zeros((len(cats) + 1, len(names)), bool)  # last row: null tags
        for i, c in enumerate(cats):
            for t in c.split(";"):
                if t:
                    per_cat[i, names.index(t)] = True
        codes = col.cat.codes.to_numpy()
        return per_cat[np.where(codes < 0, len(cats), codes)], names

    def _num(self, name: str) -> np.ndarray:
        return self.frame[name].to_numpy(dtype=float, na_value=np.nan)

    def take(self, index: np.ndarray) -> RowTable:
        """The rows at ``index`` (positions or a boolean mask), tag matrix carried along."""
        index = np.asarray(index)
        m, names = self._tags
        return RowTable(self.frame.iloc[index], m[index], names)

    # the gallery's operations
    def mask(
        self,
        tags: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        sets: Iterable[str] | None = None,
        dice_range: tuple[float, float] = (0.0, 1.0),
        uncertainty_range: tuple[float, float] | None = None,
        informative_only: bool = True,
    ) -> np.ndarray:
        """Boolean mask of :func:`medseg_core.cohort.filter_slices` (same rules: any of ``tags``;
        models / sets when given; Dice* inside ``dice_range``, NaN out; uncertainty inside the range
        where it is finite)."""
        df, n = self.frame, len(self.frame)
        keep = np.ones(n, bool)
        if informative_only:
            keep &= df["ref_present"].to_numpy(bool) | df["pred_present"].to_numpy(bool)
        if tags:
            m, names = self._tags
            idx = [names.index(t) for t in tags if t in names]
            keep &= m[:, idx].any(axis=1) if idx else False
        if models:
            keep &= df["model"].isin(list(models)).to_numpy()
        if sets:
            keep &= df["set"].isin(list(sets)).to_numpy()
        if dice_range is not None:
            d = self._num("dice_star")
            with np.errstate(invalid="ignore"):
                keep &= (d >= dice_range[0]) & (d <= dice_range[1])
        if uncertainty_range and "uncertainty" in df:
            u = self._num("uncertainty")
            with np.errstate(invalid="ignore"):
                keep &= ~np.isfinite(u) | ((u >= uncertainty_range[0]) & (u <= uncertainty_range[1]))
        return keep

    def filter(self, *args: Any, **kw: Any) -> RowTable:
        return self.take(np.flatnonzero(self.mask(*args, **kw)))

    def order(self, how: str) -> np.ndarray:
        """Row positions in the order of :data:`medseg_core.cohort.SORT_KEYS` ``[how]`` (stable, as
        Python's ``sorted``: ties keep their order, also in the descending sorts)."""
        df = self.frame
        if how == "Dice (worst first)":
            return np.argsort(self._num("dice_star"), kind="stable")
        if how == "Uncertainty (highest first)":
            u = self._num("uncertainty") if "uncertainty" in df else np.full(len(df), np.nan)
            return np.argsort(-np.where(np.isfinite(u), u, -1.0), kind="stable")
        if how == "Post-processing change (largest first)":
            d = self._num("delta_pp")
            return np.argsort(-np.where(np.isfinite(d), np.abs(d), 0.0), kind="stable")
        if how == "Case and slice":
            case = df["case"].astype("category")
            cats = [str(c) for c in case.cat.categories]
            rank = np.empty(len(cats) + 1, np.int64)
            rank[np.argsort(np.array(cats, dtype=object), kind="stable")] = np.arange(len(cats))
            rank[-1] = len(cats)
            codes = case.cat.codes.to_numpy()
            return np.lexsort((df["slice"].to_numpy(), rank[codes]))
        raise KeyError(how)

    def sort(self, how: str) -> RowTable:
        return self.take(self.order(how))

    def tag_counts(self) -> dict[str, int]:
        """How many rows carry each tag of :data:`medseg_core.analysis.TAGS` (as
        :func:`medseg_core.analysis.tag_counts`)."""
        m, names = self._tags
        sums = m.sum(axis=0)
        return {t: int(sums[names.index(t)]) for t in A.TAGS}

    def has_uncertainty(self) -> bool:
        return "uncertainty" in self.frame and bool(np.isfinite(self._num("uncertainty")).any())

    # rows for people and old code
    def records(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """Dict rows (Python values; ``tags`` a list, missing numbers NaN)."""
        df = self.frame.iloc[start:stop]
        rows = df.to_dict("records")
        for r in rows:
            if "tags" in r:
                r["tags"] = _tags_list(r["tags"] if isinstance(r["tags"], str) else None)
            for k, v in r.items():
                if isinstance(v, np.generic):
                    r[k] = v.item()
        return rows

    def csv_bytes(self) -> bytes:
        """The rows as CSV (``tags`` joined with ';'), the gallery's export."""
        return self.frame.to_csv(index=False).encode()

    def __len__(self) -> int:
        return len(self.frame)

    def __bool__(self) -> bool:
        return len(self.frame) > 0

    def __iter__(self) -> Iterator[dict]:
        for start in range(0, len(self.frame), 4096):
            yield from self.records(start, start + 4096)

    def __getitem__(self, k: int | slice) -> Any:
        if isinstance(k, slice):
            start, stop, step = k.indices(len(self.frame))
            rows = self.records(start, stop)
            return rows[::step] if step != 1 else rows
        n = len(self.frame)
        k = k + n if k < 0 else k
        if not 0 <= k < n:
            raise IndexError(k)
        return self.records(k, k + 1)[0]


def read_rows_table(run: str | Path, name: str) -> RowTable:
    """``slices`` or ``cases`` of a run folder as a :class:`RowTable`."""
    return RowTable.from_arrow(read_table(run, name))


# ----------------------------------------------------------------------------- a synthetic run at scale
def synthetic_run(
    out: str | Path,
    n_models: int = 4,
    n_sets: int = 3,
    n_cases: int = 500,
    n_slices: int = 50,
    seed: int = 0,
    csv_export: bool = False,
) -> Path:
    """Write a realistic cohort run folder of ``n_models x n_sets x n_cases x n_slices`` slice rows
    (default 300 000) without running a model: ``cohort.json``, ``slices.parquet``, ``cases.parquet``.

    Realistic shape: case ids numeric-looking strings ("0007"); about 35 % of slices hold the
    reference (a contiguous run of slices per case); Dice* of positive slices drawn from a Beta
    distribution per model and option set; tags drawn with the mix of real pelvic runs (most slices
    good; under/over-segmentation, missed, false positives on empty slices, side swaps and double
    ovaries that side masking reduces, fragments, boundary errors, post-processing annotations),
    the primary tag the first present in :data:`medseg_core.analysis.PRIMARY_ORDER`; MC-dropout
    uncertainty higher on failed slices. No masks are written (the benchmark does not draw
    thumbnails)."""
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = [f"model_{i}" for i in range(n_models)]
    sets = (["orig", "masked", "two_pass"] + [f"set_{i}" for i in range(3, n_sets)])[:n_sets]
    cases = [f"{i:04d}" for i in range(n_cases)]
    n = n_models * n_sets * n_cases * n_slices
    mi, si, ci, zi = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(n_models), np.arange(n_sets), np.arange(n_cases), np.arange(n_slices), indexing="ij"
        )
    )
    start = rng.integers(0, n_slices // 2, n_cases)
    length = rng.integers(n_slices // 4, n_slices // 2, n_cases)
    ref = (zi >= start[ci]) & (zi < start[ci] + length[ci])
    quality = 2.0 + mi + 1.5 * (si > 0)  # better models, side masking helps
    d = rng.beta(quality, 2.0, n)
    pred = np.where(ref, rng.random(n) > 0.06, rng.random(n) < np.where(si > 0, 0.05, 0.12))
    dice = np.where(ref & pred, d, np.where(ref | pred, 0.0, np.nan))
    dice_star = np.where(ref | pred, np.nan_to_num(dice), 1.0)
    sides = ref & pred & (rng.random(n) < np.where(si > 0, 0.01, 0.06))
    double = ref & pred & ~sides & (rng.random(n) < np.where(si == 1, 0.0, 0.05))
    tags_bool = {
        "missed": ref & ~pred,
        "false_positive_empty": ~ref & pred,
        "side_swap": sides,
        "double_ovary": double,
        "under_segmentation": ref & pred & ~sides & (d < 0.5) & (rng.random(n) < 0.55),
        "fragmented": pred & (rng.random(n) < 0.04),
        "boundary_error": ref & pred & (d >= 0.5) & (rng.random(n) < 0.05),
        "postprocessing_helped": pred & (rng.random(n) < 0.04),
        "postprocessing_hurt": pred & (rng.random(n) < 0.02),
    }
    tags_bool["over_segmentation"] = ref & pred & ~sides & (d < 0.5) & ~tags_bool["under_segmentation"]
    if sides.any():
        dice_star = np.where(sides, rng.uniform(0, 0.05, n), dice_star)
    errors = np.zeros(n, bool)
    for t, v in tags_bool.items():
        if t not in ("postprocessing_helped", "postprocessing_hurt"):
            errors |= v
    tags_bool["good"] = ~errors
    names = [t for t in A.TAGS if t in tags_bool]
    code = np.zeros(n, np.int64)
    for j, t in enumerate(names):
        code |= tags_bool[t].astype(np.int64) << j
    uniq, inv = np.unique(code, return_inverse=True)
    tag_lists = [[t for j, t in enumerate(names) if c >> j & 1] for c in uniq]
    primary_of = [next(t for t in A.PRIMARY_ORDER if t in tl) for tl in tag_lists]
    unc = np.clip(rng.gamma(2.0, 0.04, n) + 0.15 * errors, 0, 0.69)
    spacing = 0.75 * 0.75
    ref_area = np.where(ref, rng.uniform(50, 900, n), 0.0) * spacing
    pred_area = np.where(pred, np.where(ref, ref_area * rng.uniform(0.5, 1.5, n), rng.uniform(10, 200, n)), 0.0)
    delta_pp = np.where(
        tags_bool["postprocessing_helped"], 0.15, np.where(tags_bool["postprocessing_hurt"], -0.15, 0.0)
    )
    tags_type = pa.list_(pa.string())

    def dict_arr(values, idx):
        return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), pa.array(values)).cast(pa.string())

    cols = {
        "model": dict_arr(models, mi),
        "set": dict_arr(sets, si),
        "case": dict_arr(cases, ci),
        "patient": dict_arr(cases, ci),
        "label": pa.array(np.full(n, "ovary", object), pa.string()),
        "slice": pa.array(zi.astype(np.int64)),
        "slice_number": pa.array(zi.astype(np.int64) + 1),
        "dice": pa.array(dice),
        "iou": pa.array(dice / (2 - np.nan_to_num(dice, nan=1.0))),
        "precision": pa.array(dice),
        "recall": pa.array(dice),
        "hd95_mm": pa.array(np.where(ref & pred, rng.gamma(2.0, 3.0, n) + 30 * sides, np.nan)),
        "pred_area_mm2": pa.array(pred_area),
        "ref_area_mm2": pa.array(ref_area),
        "both_empty": pa.array(~ref & ~pred),
        "ref_present": pa.array(ref),
        "pred_present": pa.array(pred),
        "dice_star": pa.array(dice_star),
        "dice_before_pp": pa.array(dice_star - delta_pp),
        "delta_pp": pa.array(delta_pp),
        "frac_on_other": pa.array(np.where(sides, 0.9, 0.0)),
        "n_components": pa.array(pred.astype(np.int64) + tags_bool["fragmented"] + double),
        "uncertainty": pa.array(unc),
        "primary": dict_arr(primary_of, inv),
        "tags": pa.array(tag_lists, tags_type).take(pa.array(inv)),
    }
    write_parquet(out / "slices.parquet", pa.table(cols).cast(pa.schema([(k, column_type(k)) for k in cols])))
    case_rows = []
    sd = pd.DataFrame({"m": mi, "s": si, "c": ci, "d": dice_star, "u": unc})
    for (m, s, c), g in sd.groupby(["m", "s", "c"], sort=True):
        case_rows.append(
            {
                "model": models[m],
                "set": sets[s],
                "case": cases[c],
                "patient": cases[c],
                "label": "ovary",
                "dice": float(g["d"].mean()),
                "uncertainty": float(g["u"].mean()),
                "primary": "good",
                "tags": ["good"],
                "seconds": 1.0,
            }
        )
    write_parquet(out / "cases.parquet", case_rows, CASE_SCHEMA)
    meta = {
        "models": models,
        "model_refs": {},
        "predictions": {},
        "option_sets": {s: {} for s in sets},
        "exact_options": {},
        "mc_samples": 8,
        "seed": seed,
        "rules": A.TagRules().to_dict(),
        "dataset": {"adapter": "ut_endomri_d2", "root": "", "synthetic": "table only"},
        "case_ids": cases,
        "seconds": 0.0,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "synthetic_table": True,
    }
    (out / "cohort.json").write_text(json.dumps(meta, indent=1))
    if csv_export:
        (out / "slices.csv").write_bytes(read_rows_table(out, "slices").csv_bytes())
    return out
