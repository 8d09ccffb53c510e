"""Server-wide memory budget and compact prediction storage (issue 21 items 1 and 2).

One review server holds, per session, the case (volume, reference, uploaded masks) and up to a few
predictions. Nothing used to bound the total: a handful of 300 x 512 x 512 CTs could exhaust the
machine and the operating system then killed the whole server. This module is the accounting; the
app (``pages/_shared.py``) calls it. No Streamlit import here.

**Compact results** (:func:`compact_prediction`). A float32 prediction of a 300 x 512 x 512 CT holds
629 MB (probabilities 315 MB + four uint8 masks of 79 MB). Stored compactly:

* masks (kept, before post-processing, removed, added, two-pass sides) bit-packed along X
  (:class:`PackedMask`, 1 bit a voxel, an empty mask 0 bytes): exact, so masks, metrics, exports
  and TP / FP / FN overlays are unchanged bit for bit;
* probabilities quantised to uint8 on [0, 1] (:class:`QuantisedMap`, ``round(p * 255)``): at most
  1/510 = 0.00196 off. Nothing downstream thresholds them again (the masks are kept exactly), the
  viewer's colour maps have 256 levels anyway;
* uncertainty maps (mean, entropy, mutual information, variance) quantised to uint8 on [0, max of
  the map]: at most max/510 off (entropy: 0.0014 nats); the per-case and per-slice uncertainty scores
  are computed from the float32 maps before compaction and kept as they are.

So that prediction is 79 MB + 2 x 9.8 MB = 98 MB (118 MB when post-processing removed and added
voxels), against the issue's goal of 120 MB. Slicing a compact map decodes only that slice (the
viewer's slider never unpacks the volume); ``np.asarray`` decodes the whole map; numpy operators and
ufuncs work on them (``NDArrayOperatorsMixin``) and give ordinary arrays.

**Budget** (:class:`MemoryBudget`, one per process: :func:`server_budget`). Every session registers
what it holds with its size in bytes: the case (not evictable: it cannot be recomputed) and each
prediction (evictable: recomputed on demand). ``reserve`` makes room for a new request by evicting
the least recently used evictable entries of *any* session; a request that cannot fit even then is
refused with a sentence (:class:`BudgetExceeded`, an ``InputError``). A model run also reserves its
working memory for as long as it runs (:func:`predict_working_bytes`). Sessions idle for longer than
``MEDSEG_IDLE_MINUTES`` are released (their release callback drops the case and the results).

Environment: ``MEDSEG_MEMORY_GB`` (default: half the machine's RAM, the rest being left to the
models, the Python processes and the operating system), ``MEDSEG_IDLE_MINUTES`` (default 60).
"""

from __future__ import annotations

import dataclasses
import operator
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from .io.errors import InputError

if TYPE_CHECKING:
    from .inference import Prediction, PredictOptions
    from .models import ModelSpec

GB = 1e9


# ----------------------------------------------------------------------------- compact arrays
class _Compact(np.lib.mixins.NDArrayOperatorsMixin):
    """Shared duck-array behaviour: ``np.asarray`` decodes, ufuncs and operators work on the
    decoded array, unknown attributes (``sum``, ``astype``, ``max`` ...) are the decoded array's."""

    shape: tuple
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def decode(self) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype=None, copy=None):
        a = self.decode()
        return a if dtype is None else a.astype(dtype, copy=False)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, _Compact) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        def conv(x):
            if isinstance(x, _Compact):
                return x.decode()
            if isinstance(x, (list, tuple)):
                return type(x)(conv(y) for y in x)
            return x

        return func(*conv(args), **{k: conv(v) for k, v in kwargs.items()})

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.decode(), name)

    def _index(self, idx) -> tuple | None:
        """``idx`` as a full tuple of ints / slices, or None for anything fancier."""
        if not isinstance(idx, tuple):
            idx = (idx,)
        if any(i is Ellipsis or i is None for i in idx) or len(idx) > self.ndim:
            return None
        out: list[int | slice] = []
        for i in idx:
            if isinstance(i, slice):
                out.append(i)
            else:
                try:
                    out.append(operator.index(i))
                except TypeError:
                    return None
        return tuple(out) + (slice(None),) * (self.ndim - len(out))


class PackedMask(_Compact):
    """A 0/1 uint8 volume stored as bits along the last axis (``np.packbits``), 8 voxels a byte.
    An all-zero mask stores nothing. ``nbytes`` is the stored size."""

    def __init__(self, mask: np.ndarray) -> None:
        m = np.asarray(mask)
        self.shape = tuple(m.shape)
        self.dtype = np.dtype(np.uint8)
        nz = bool(m.any())
        self._bits = np.packbits(m != 0, axis=-1) if nz and m.ndim else None

    @property
    def nbytes(self) -> int:
        return 0 if self._bits is None else int(self._bits.nbytes)

    def decode(self) -> np.ndarray:
        if self._bits is None:
            return np.zeros(self.shape, np.uint8)
        return np.unpackbits(self._bits, axis=-1, count=self.shape[-1])

    def __getitem__(self, idx: Any) -> np.ndarray:
        full = self._index(idx)
        if full is None:
            return self.decode()[idx]
        head, last = full[:-1], full[-1]
        if self._bits is None:
            return np.zeros(np.broadcast_to(np.uint8(0), self.shape)[full].shape, np.uint8)
        b = self._bits[head]
        if isinstance(last, int):
            x = last + self.shape[-1] if last < 0 else last
            if not 0 <= x < self.shape[-1]:
                raise IndexError(f"index {last} is out of bounds for axis {self.ndim - 1} with size {self.shape[-1]}")
            return ((b[..., x // 8] >> (7 - x % 8)) & 1).astype(np.uint8)
        return np.unpackbits(b, axis=-1, count=self.shape[-1])[..., last]

    def any(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return self.decode().any(*args, **kwargs)
        return self._bits is not None and bool(self._bits.any())

    def sum(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return self.decode().sum(*args, **kwargs)
        return 0 if self._bits is None else int(np.bitwise_count(self._bits).sum(dtype=np.int64))

    def __repr__(self) -> str:
        return f"PackedMask(shape={self.shape}, stored={self.nbytes} bytes)"


class QuantisedMap(_Compact):
    """A float map on [0, ``top``] stored as uint8 (``round(v / top * 255)``), decoded to float32.
    The largest error is ``top / 510``. ``top`` defaults to 1 (probabilities); ``top=None`` takes
    the map's own maximum (uncertainty maps), which ``max()`` then returns exactly."""

    def __init__(self, values: np.ndarray, top: float | None = 1.0) -> None:
        v = np.asarray(values, np.float32)
        self.shape = tuple(v.shape)
        self.dtype = np.dtype(np.float32)
        if top is None:
            top = float(v.max()) if v.size else 0.0
        self.top = float(top)
        scale = 255.0 / self.top if self.top > 0 else 0.0
        self._q = np.rint(np.clip(v, 0.0, self.top) * scale).astype(np.uint8)

    @property
    def nbytes(self) -> int:
        return int(self._q.nbytes)

    @property
    def max_error(self) -> float:
        return self.top / 510.0

    def _dec(self, q: np.ndarray) -> np.ndarray:
        return q.astype(np.float32) * np.float32(self.top / 255.0)

    def decode(self) -> np.ndarray:
        return self._dec(self._q)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return self._dec(self._q[idx])

    def max(self, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return self.decode().max(*args, **kwargs)
        return np.float32(self._dec(self._q.max(initial=0)))

    def __repr__(self) -> str:
        return f"QuantisedMap(shape={self.shape}, top={self.top:g}, stored={self.nbytes} bytes)"


def array_bytes(a: object) -> int:
    """Bytes an array (or compact array, or None) holds."""
    if a is None:
        return 0
    if isinstance(a, _Compact):
        return a.nbytes
    return int(getattr(a, "nbytes", 0))


#: the mask volumes of a per-label result (:class:`~medseg_core.results.LabelResult`)
MASK_FIELDS = ("mask", "before_postprocessing", "removed", "added")


def prediction_bytes(pred: Prediction) -> int:
    """Bytes the arrays of a :class:`~medseg_core.inference.Prediction` hold (masks, probabilities,
    uncertainty maps, sides, per-slice arrays, the restored image). One array shared by several
    fields (e.g. one empty mask) is counted once."""
    seen: dict[int, int] = {}

    def add(a) -> None:
        if a is not None and id(a) not in seen:
            seen[id(a)] = array_bytes(a)

    for r in pred.per_label.values():
        for f in (*MASK_FIELDS, "probability"):
            add(getattr(r, f))
    for a in pred.uncertainty_maps.values():
        add(a)
    for side in pred.sides.values():
        add(side.mask)
    for extra in (pred.class_probabilities, pred.slice_class_probabilities, pred.presence, pred.restored):
        add(extra)
    return sum(seen.values())


def compact_prediction(pred: Prediction) -> Prediction:
    """A copy of ``pred`` whose volumes are stored compactly (see the module docstring): masks
    bit-packed, probabilities uint8 on [0, 1], uncertainty maps uint8 on [0, their max]. Per-slice
    arrays, scores, timings and warnings are kept as they are. Already compact maps stay as they are."""

    def pack(m):
        return m if isinstance(m, _Compact) else PackedMask(m)

    def quant(v, top=1.0):
        return v if v is None or isinstance(v, _Compact) else QuantisedMap(v, top)

    changes: dict[str, Any] = {
        "per_label": {
            k: dataclasses.replace(r, **{f: pack(getattr(r, f)) for f in MASK_FIELDS}, probability=quant(r.probability))
            for k, r in pred.per_label.items()
        },
        "sides": {s: dataclasses.replace(v, mask=pack(v.mask)) for s, v in pred.sides.items()},
    }
    if pred.uncertainty is not None:
        maps = {k: quant(u, 1.0 if k == "mean" else None) for k, u in pred.uncertainty.maps.items()}
        changes["uncertainty"] = dataclasses.replace(pred.uncertainty, maps=maps)
    return dataclasses.replace(pred, **changes)


def compact_bytes_estimate(shape: Sequence[int], n_labels: int = 1, uncertainty: bool = False) -> int:
    """Upper bound of a compact prediction's bytes on a grid of ``shape`` (probabilities 1 byte and
    four masks 1 bit a voxel per label; four uncertainty maps of 1 byte a voxel)."""
    n = int(np.prod(shape))
    per_label = n + 4 * ((n + 7) // 8)
    return n_labels * per_label + (4 * n if uncertainty else 0)


def predict_working_bytes(
    spec: ModelSpec, shape: Sequence[int], spacing: Sequence[float], options: PredictOptions
) -> int:
    """Working memory of one ``predict`` call while it runs (float32 maps on the input grid and the
    model's grid, MC / TTA samples). The same estimate as the per-request cap of
    :func:`medseg_core.inference.check_contract` (``MEDSEG_PREDICT_MEMORY_GB``): measured peak RSS of
    unet3d on a 300 x 512 x 512 CT is 1.0 GB above the process's baseline (benchmarks/RESULTS.md),
    this estimate 2.0 GB, on the safe side."""
    n = int(np.prod(shape))
    mc = max(int(getattr(options, "mc_samples", 0) or 0), 1)
    if getattr(spec, "dims", "2d") == "3d":
        factor = float(np.prod(np.asarray(spacing, float) / np.asarray(spec.target_spacing, float)))
        return int(n * 4 * 6 + n * factor * 4 * (4 + 2 * mc))
    return int(n * 4 * (6 + 2 * mc))


# ----------------------------------------------------------------------------- the budget
class BudgetExceeded(InputError):
    """A single request that cannot fit in the server's memory budget (a sentence for the page)."""


def _machine_ram() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return int(8 * GB)


def default_limit() -> int:
    """``MEDSEG_MEMORY_GB`` in bytes, else half the machine's RAM."""
    v = os.environ.get("MEDSEG_MEMORY_GB")
    return int(float(v) * GB) if v else _machine_ram() // 2


def default_idle_seconds() -> float:
    return float(os.environ.get("MEDSEG_IDLE_MINUTES", "60")) * 60.0


@dataclasses.dataclass
class Entry:
    session: str
    key: object
    nbytes: int
    evictable: bool
    on_release: Callable[[], None] | None
    last_used: float
    what: str = ""


class MemoryBudget:
    """Byte accounting of what the sessions of one server hold, with LRU eviction across sessions.

    Entries are ``(session, key)`` -> bytes. Evictable entries (predictions) are released, least
    recently used first, whichever session holds them, when a new request needs room; their
    ``on_release`` callback drops the object (the owner recomputes it on demand). Entries that are
    not evictable (a session's case) are released only with their session (idle time-out or the
    session itself). Thread-safe: Streamlit runs every session's script in its own thread. Callbacks
    run outside the lock.
    """

    def __init__(
        self,
        limit_bytes: int | None = None,
        idle_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        gone_grace_s: float = 120.0,
    ) -> None:
        self.limit = int(limit_bytes if limit_bytes is not None else default_limit())
        self.idle_seconds = float(idle_seconds if idle_seconds is not None else default_idle_seconds())
        self.clock = clock
        self._lock = threading.RLock()
        self._freed = threading.Condition(self._lock)  # notified when bytes are let go (waiting runs retry)
        self._entries: dict[tuple, Entry] = {}
        self._activity: dict[str, float] = {}
        self._session_release: dict[str, Callable[[], None]] = {}
        self._alive: dict[str, Callable[[], bool]] = {}
        self.gone_grace_s = gone_grace_s  # a closed tab may reconnect within this (Streamlit keeps its state)
        self.evictions = 0
        self.refusals = 0
        self.idle_releases = 0
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    def start_sweeper(self, interval_s: float | None = None) -> None:
        """Release idle and closed sessions every ``interval_s`` seconds (default: a quarter of the idle
        time-out, at most a minute) from a daemon thread, so their memory is freed on time even when no
        other request comes to sweep. Started once; :meth:`stop_sweeper` ends it."""
        with self._lock:
            if self._sweeper is not None and self._sweeper.is_alive():
                return
            every = float(interval_s if interval_s is not None else min(60.0, max(self.idle_seconds / 4, 1.0)))
            self._stop.clear()

            def loop() -> None:
                while not self._stop.wait(every):
                    try:
                        self.release_idle()
                    except Exception:  # a failing callback must not end the sweeping
                        pass

            self._sweeper = threading.Thread(target=loop, name="medseg-budget-sweeper", daemon=True)
            self._sweeper.start()

    def stop_sweeper(self) -> None:
        self._stop.set()
        t = self._sweeper
        if t is not None:
            t.join(timeout=5)
        self._sweeper = None

    # -- bookkeeping
    @property
    def used(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def held_by(self, session: str) -> int:
        with self._lock:
            return sum(e.nbytes for (s, _), e in self._entries.items() if s == session)

    def holds(self, session: str, key: Hashable) -> bool:
        with self._lock:
            return (session, key) in self._entries

    def stats(self) -> dict:
        with self._lock:
            return {
                "limit_bytes": self.limit,
                "used_bytes": self.used,
                "entries": len(self._entries),
                "sessions": len(self._activity),
                "evictions": self.evictions,
                "refusals": self.refusals,
                "idle_releases": self.idle_releases,
            }

    def session_started(
        self, session: str, on_release: Callable[[], None] | None = None, alive: Callable[[], bool] | None = None
    ) -> None:
        """Note a session's activity; ``on_release`` is called when it is released for idleness.
        ``alive()`` says whether the session is still connected: one that is not, and has done
        nothing for ``gone_grace_s``, is released without waiting for the idle time-out (its browser
        tab was closed; what it held must not count against the others for an hour)."""
        with self._lock:
            self._activity[session] = self.clock()
            if on_release is not None:
                self._session_release[session] = on_release
            if alive is not None:
                self._alive[session] = alive

    def touch(self, session: str, key: Hashable | None = None) -> None:
        """Mark the session active and, with ``key``, that entry most recently used."""
        with self._lock:
            now = self.clock()
            self._activity[session] = now
            e = self._entries.get((session, key))
            if e is not None:
                e.last_used = now

    # -- holding
    def hold(
        self,
        session: str,
        key: Hashable,
        nbytes: int,
        *,
        evictable: bool,
        on_release: Callable[[], None] | None = None,
        what: str = "",
        reserve: bool = True,
        wait_s: float = 0.0,
    ) -> None:
        """Account ``nbytes`` held by ``session`` under ``key`` (replacing an earlier entry of that
        key). With ``reserve`` room is made first (evicting others' least recently used results) and
        :class:`BudgetExceeded` raised when it cannot fit; nothing is held then."""
        with self._lock:
            self._activity[session] = self.clock()  # a request is activity: never released as idle by its own sweep
            old = self._entries.pop((session, key), None)
        try:
            if reserve:
                self.reserve(session, nbytes, what, wait_s=wait_s)
        except BudgetExceeded:
            if old is not None:
                with self._lock:
                    self._entries[(session, key)] = old
            raise
        with self._lock:
            now = self.clock()
            self._activity[session] = now
            self._entries[(session, key)] = Entry(session, key, int(nbytes), evictable, on_release, now, what)

    def drop(self, session: str, key: Hashable) -> None:
        """The owner let go of ``key`` itself: forget it (no callback)."""
        with self._lock:
            self._entries.pop((session, key), None)
            self._freed.notify_all()

    def drop_session(self, session: str) -> None:
        with self._lock:
            for k in [k for k in self._entries if k[0] == session]:
                del self._entries[k]
            self._activity.pop(session, None)
            self._session_release.pop(session, None)
            self._alive.pop(session, None)

    # -- making room
    def reserve(self, session: str, nbytes: int, what: str = "this request", wait_s: float = 0.0) -> list:
        """Make room for ``nbytes`` more: release idle sessions, then evict the least recently used
        evictable entries of any session. Returns the evicted entries; raises
        :class:`BudgetExceeded` (evicting nothing) when even evicting every result would not do.
        When only other sessions' running models stand in the way, waits up to ``wait_s`` seconds
        for them to finish (a queue, not a refusal)."""
        self.release_idle()
        callbacks, evicted = [], []
        deadline = time.monotonic() + wait_s
        with self._lock:
            while True:
                used = self.used
                if used + nbytes <= self.limit:
                    break
                pinned = sum(e.nbytes for e in self._entries.values() if not e.evictable)
                if pinned + nbytes <= self.limit:
                    break
                running = sum(e.nbytes for e in self._entries.values() if _is_transient(e.key))
                left = deadline - time.monotonic()
                if running and pinned - running + nbytes <= self.limit and left > 0:
                    self._freed.wait(min(left, 1.0))  # another session's model run will give its memory back
                    continue
                self.refusals += 1
                raise BudgetExceeded(self._refusal(nbytes, pinned, what))
            if used + nbytes > self.limit:
                for e in sorted((e for e in self._entries.values() if e.evictable), key=lambda e: e.last_used):
                    if used + nbytes <= self.limit:
                        break
                    del self._entries[(e.session, e.key)]
                    used -= e.nbytes
                    evicted.append(e)
                    self.evictions += 1
                    if e.on_release is not None:
                        callbacks.append(e.on_release)
        for cb in callbacks:
            cb()
        return evicted

    def _refusal(self, nbytes: int, pinned: int, what: str) -> str:
        free = max(self.limit - pinned, 0)
        if nbytes > self.limit:
            return (
                f"Sorry, {what} needs about {nbytes / GB:.1f} GB of memory, more than this server's whole "
                f"budget of {self.limit / GB:.1f} GB (MEDSEG_MEMORY_GB); crop the volume, use fewer MC samples, "
                "or ask the administrator to raise the budget."
            )
        return (
            f"Sorry, {what} needs about {nbytes / GB:.1f} GB of memory, but only {free / GB:.1f} GB of this "
            f"server's {self.limit / GB:.1f} GB budget is free while the cases open in other sessions are kept; "
            "please try again in a few minutes, or close cases you no longer need."
        )

    @contextmanager
    def transient(self, session: str, nbytes: int, what: str = "this request", wait_s: float = 600.0) -> Iterator[None]:
        """Hold ``nbytes`` for the duration of a ``with`` block (a model run's working memory),
        waiting up to ``wait_s`` for other sessions' runs when only they stand in the way."""
        key = ("transient", object())
        self.hold(session, key, nbytes, evictable=False, what=what, wait_s=wait_s)
        try:
            yield
        finally:
            self.drop(session, key)

    def release_idle(self, now: float | None = None) -> list[str]:
        """Release every session idle for longer than ``idle_seconds``: its entries' callbacks and
        its own release callback run, and it is forgotten. Returns the released sessions."""
        now = self.clock() if now is None else now
        callbacks, released = [], []
        with self._lock:
            for s, t in list(self._activity.items()):
                gone = s in self._alive and now - t > self.gone_grace_s and not _call(self._alive[s], True)
                if now - t <= self.idle_seconds and not gone:
                    continue
                if any(k[0] == s and _is_transient(k[1]) for k in self._entries):
                    continue  # a model is running for it: not idle
                released.append(s)
                for k in [k for k in self._entries if k[0] == s]:
                    e = self._entries.pop(k)
                    if e.on_release is not None:
                        callbacks.append(e.on_release)
                cb = self._session_release.pop(s, None)
                if cb is not None:
                    callbacks.append(cb)
                del self._activity[s]
                self._alive.pop(s, None)
                self.idle_releases += 1
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a vanished session must not break another one's request
                pass
        return released


def _call(fn, default):
    try:
        return fn()
    except Exception:  # a liveness probe that fails says nothing
        return default


def _is_transient(key) -> bool:
    return isinstance(key, tuple) and key[:1] == ("transient",)


_SERVER: MemoryBudget | None = None
_SERVER_LOCK = threading.Lock()


def server_budget() -> MemoryBudget:
    """The process's budget (created from the environment on first use)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None:
            _SERVER = MemoryBudget()
            _SERVER.start_sweeper()
        return _SERVER


def set_server_budget(budget: MemoryBudget | None) -> None:
    """Replace the process's budget (tests; ``None`` re-reads the environment on next use)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None and _SERVER is not budget:
            _SERVER.stop_sweeper()
        _SERVER = budget
