"""``make loadtest`` (issue 21 item 3; never part of ``make test``): N concurrent reviewers on one server.

One Streamlit server (``app.py``, ``MEDSEG_MEMORY_GB`` set to the budget under test) and one headless
Chromium (Debian's ``/usr/bin/chromium`` through Playwright's async API) with N browser contexts,
each its own Streamlit session. Every session, started a little after the previous one so that
their actions overlap:

1. opens the app (``open``), uploads a large CT NIfTI on Load case (``upload``: until the sidebar
   names it);
2. on Segment & review presses Run model (``run``: until the Results heading; the sidebar's default
   model for a CT, the spleen unet3d);
3. moves the slice slider (``slider``: ArrowRight until the picture changes, as ``make bench`` does;
   each move is also marked whether a model was running in another session at that moment);
4. exports the mask (``export``: the NIfTI download arrives).

Measured: latency percentiles per action, failures (a timeout, an exception, or an error box on the
page: e.g. a refusal of the memory budget), and the server's peak RSS (its process tree, sampled
from ``/proc`` every 100 ms). Results go to ``benchmarks/loadtest.json`` and a "Load test" section
of ``benchmarks/RESULTS.md``.

The phantom is smooth (body, spleen, spine; 3 HU noise) so that its file is small: the upload
measures the server's reading of the volume rather than the network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
OUT_JSON = ROOT / "benchmarks" / "loadtest.json"
OUT_MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- loadtest:begin -->", "<!-- loadtest:end -->"


def write_phantom(path: Path, shape=(300, 512, 512), spacing=(1.5, 0.8, 0.8), seed: int = 0) -> Path:
    """A CT phantom (HU, int16) of ``shape`` (Z, Y, X) as NIfTI: air, a soft-tissue body, a spleen, a spine."""
    import nibabel as nib

    z, y, x = shape
    rng = np.random.default_rng(seed)
    zz = np.linspace(-1, 1, z, dtype=np.float32)[:, None, None]
    yy = np.linspace(-1, 1, y, dtype=np.float32)[None, :, None]
    xx = np.linspace(-1, 1, x, dtype=np.float32)[None, None, :]
    vol = np.full(shape, -1000, np.int16)
    body = (yy / 0.7) ** 2 + (xx / 0.85) ** 2 <= 1
    vol[np.broadcast_to(body, shape)] = 40
    spleen = ((zz - 0.1) / 0.35) ** 2 + ((yy + 0.1) / 0.22) ** 2 + ((xx - 0.45) / 0.18) ** 2 <= 1
    vol[spleen] = 55
    spine = (yy - 0.45) ** 2 + xx**2 <= 0.12**2
    vol[np.broadcast_to(spine, shape)] = 700
    vol += rng.integers(-3, 4, shape, dtype=np.int16)
    sz, sy, sx = spacing
    # medseg's canonical (Z, Y, X) RAS+ array -> NIfTI (X, Y, Z) with a diagonal affine
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.diag([sx, sy, sz, 1.0])), str(path))
    return path


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled from /proc."""

    def __init__(self, pid: int, every: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.stop = pid, every, 0, threading.Event()
        self.samples: list[tuple[float, int]] = []

    @staticmethod
    def _tree(pid: int) -> list[int]:
        out, todo = [], [pid]
        while todo:
            p = todo.pop()
            out.append(p)
            try:
                for t in os.listdir(f"/proc/{p}/task"):
                    kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                    todo.extend(int(k) for k in kids)
            except OSError:
                pass
        return out

    def rss(self) -> int:
        total = 0
        for p in self._tree(self.pid):
            try:
                for line in Path(f"/proc/{p}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def run(self):
        t0 = time.perf_counter()
        while not self.stop.is_set():
            r = self.rss()
            self.peak = max(self.peak, r)
            self.samples.append((time.perf_counter() - t0, r))
            time.sleep(self.every)


async def session(k: int, b, url: str, ct: Path, moves: int, delay: float, running: set, log: dict, timeout_ms: int):
    """One reviewer. Appends (action, seconds, other_running) to ``log['times']`` and failures to
    ``log['failures']``."""
    await asyncio.sleep(delay)
    ctx = await b.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    page = await ctx.new_page()
    step = "open"

    def rec(action, t, other=None):
        log["times"].append({"session": k, "action": action, "s": t, "other_running": other})

    async def error_on_page():
        alerts = page.locator("[data-testid=stAlertContentError]")
        return (await alerts.first.inner_text()) if await alerts.count() else None

    try:
        t = time.perf_counter()
        await page.goto(url, wait_until="domcontentloaded")
        await page.get_by_text("Research use only").first.wait_for(timeout=timeout_ms)
        rec("open", time.perf_counter() - t)
        step = "upload"
        t = time.perf_counter()
        await page.get_by_role("link", name="Load case").click()
        await page.get_by_role("tab", name="Upload").click()
        await page.locator("input[type=file]").first.set_input_files(str(ct))
        await page.locator("[data-testid=stSidebar]").get_by_text(ct.name).wait_for(timeout=timeout_ms)
        rec("upload", time.perf_counter() - t)
        if err := await error_on_page():
            raise RuntimeError(err)
        step = "run"
        await page.get_by_role("link", name="Segment & review").click()
        cap = page.get_by_text("chosen in the sidebar").first
        await cap.wait_for(timeout=timeout_ms)
        log.setdefault("models", set()).add(" ".join((await cap.inner_text()).split("·")[0].split()))
        await page.get_by_role("button", name="Run model").click(timeout=timeout_ms)
        t = time.perf_counter()
        others = bool(running)
        running.add(k)
        try:
            res = page.get_by_role("heading", name="Results")
            err = page.locator("[data-testid=stAlertContentError]")
            await res.or_(err).first.wait_for(timeout=timeout_ms)
            if await err.count():
                raise RuntimeError(await err.first.inner_text())
        finally:
            running.discard(k)
        rec("run", time.perf_counter() - t, others)
        step = "slider"
        slider = page.get_by_role("slider", name="Slice")
        await slider.focus()
        img = page.locator(".js-plotly-plot image").first
        for _ in range(moves):
            before = await img.get_attribute("href")
            other = bool(running - {k})
            t = time.perf_counter()
            await page.keyboard.press("ArrowRight")
            await page.wait_for_function(
                "(b) => { const i = document.querySelector('.js-plotly-plot image');"
                " return i && i.getAttribute('href') !== b; }",
                arg=before,
                timeout=min(timeout_ms, 120_000),
            )
            rec("slider", time.perf_counter() - t, other or bool(running - {k}))
            await page.wait_for_timeout(250)
        step = "export"
        t = time.perf_counter()
        async with page.expect_download(timeout=timeout_ms) as dl:
            await page.get_by_role("button", name="Export mask (NIfTI, source affine)").click()
        d = await dl.value
        size = os.path.getsize(await d.path())
        rec("export", time.perf_counter() - t)
        if size < 1000:
            raise RuntimeError(f"exported mask of {size} bytes")
    except Exception as e:  # noqa: BLE001 - every failure is counted and described
        log["failures"].append({"session": k, "step": step, "error": " ".join(str(e).split())[:300]})
    finally:
        await ctx.close()


def _server_pid(port: str) -> int:
    """The pid of the streamlit server this process started on ``port`` (from /proc)."""
    me = str(os.getpid())
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            ppid = next(line.split()[1] for line in (d / "status").read_text().splitlines() if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        if ppid == me and b"streamlit" in b" ".join(cmd) and port.encode() in cmd:
            return int(d.name)
    raise RuntimeError("the server process was not found")


def _pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(log: dict) -> dict:
    out = {}
    for action in ("open", "upload", "run", "slider", "export"):
        v = [x["s"] for x in log["times"] if x["action"] == action]
        if v:
            out[action] = {
                "n": len(v),
                "p50_s": round(_pct(v, 50), 3),
                "p95_s": round(_pct(v, 95), 3),
                "max_s": round(max(v), 3),
            }
    busy = [x["s"] for x in log["times"] if x["action"] == "slider" and x["other_running"]]
    if busy:
        out["slider_while_another_runs"] = {
            "n": len(busy),
            "p50_s": round(_pct(busy, 50), 3),
            "p95_s": round(_pct(busy, 95), 3),
            "max_s": round(max(busy), 3),
        }
    return out


async def _main_async(url, ct, a, log):
    from browser import CHROMIUM, CHROMIUM_ARGS
    from playwright.async_api import async_playwright

    running: set = set()
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            await asyncio.gather(
                *(
                    session(k, b, url, ct, a.moves, k * a.stagger, running, log, int(a.timeout * 1000))
                    for k in range(a.sessions)
                )
            )
        finally:
            await b.close()


def markdown(r: dict) -> str:
    s = r["summary"]
    lines = [
        BEGIN,
        "## Load test",
        "",
        f"`make loadtest` on {r['date']} ({r['machine']}): {r['sessions']} concurrent Chromium sessions on one "
        f"server, each uploading a {r['shape']} CT ({r['file_mb']:.0f} MB NIfTI), running the sidebar's model "
        f"({'; '.join(r.get('models', [])) or 'unknown'}), "
        f"moving the slice slider {r['moves']} times and exporting the mask; sessions started {r['stagger']} s "
        f"apart; `MEDSEG_MEMORY_GB={r['budget_gb']:g}`.",
        "",
        f"Failures: **{len(r['failures'])}**. Server peak RSS (process tree): **{r['peak_rss_gb']:.2f} GB** "
        f"(idle after start: {r['rss_start_gb']:.2f} GB). Wall time {r['wall_s']:.0f} s.",
        "",
        "| action | n | p50 (s) | p95 (s) | max (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = {
        "open": "open the app",
        "upload": "upload the CT (until the sidebar names it)",
        "run": "Run model (until Results)",
        "slider": "slider move (until the picture changes)",
        "slider_while_another_runs": "slider move while a model runs in another session",
        "export": "export the mask (NIfTI download)",
    }
    for k, label in names.items():
        if k in s:
            x = s[k]
            lines.append(f"| {label} | {x['n']} | {x['p50_s']} | {x['p95_s']} | {x['max_s']} |")
    for f in r["failures"]:
        lines.append(f"\nFailure: session {f['session']}, {f['step']}: {f['error']}")
    if r.get("note"):
        lines += ["", r["note"]]
    lines.append(END)
    return "\n".join(lines)


def write_section(r: dict) -> None:
    text = OUT_MD.read_text() if OUT_MD.exists() else "# Benchmark results\n"
    sec = markdown(r)
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + sec + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + sec + "\n"
    OUT_MD.write_text(text)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--shape", default="300x512x512", help="Z x Y x X of the CT phantom")
    ap.add_argument("--budget-gb", type=float, default=8.0, help="MEDSEG_MEMORY_GB of the server")
    ap.add_argument("--moves", type=int, default=8)
    ap.add_argument("--stagger", type=float, default=5.0, help="seconds between session starts")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per action before it counts as failed")
    ap.add_argument("--note", default="", help="a sentence added under the table")
    ap.add_argument("--no-write", action="store_true", help="print only (smoke runs)")
    a = ap.parse_args(argv)
    from browser import app_server

    shape = tuple(int(v) for v in a.shape.lower().split("x"))
    log = {"times": [], "failures": []}
    with tempfile.TemporaryDirectory() as tmp:
        ct = write_phantom(Path(tmp) / f"loadtest_ct_{'x'.join(map(str, shape))}.nii.gz", shape)
        env = {"MEDSEG_MEMORY_GB": str(a.budget_gb)}
        t0 = time.perf_counter()
        with app_server(timeout=180, env=env) as url:
            pid = _server_pid(url.rsplit(":", 1)[1])
            sampler = RssSampler(pid)
            rss_start = sampler.rss()
            sampler.start()
            try:
                asyncio.run(_main_async(url, ct, a, log))
            finally:
                sampler.stop.set()
                sampler.join()
        wall = time.perf_counter() - t0
        file_mb = ct.stat().st_size / 1e6
    import platform

    r = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB RAM",
        "sessions": a.sessions,
        "shape": " x ".join(map(str, shape)),
        "budget_gb": a.budget_gb,
        "moves": a.moves,
        "stagger": a.stagger,
        "file_mb": file_mb,
        "peak_rss_gb": sampler.peak / 1e9,
        "rss_start_gb": rss_start / 1e9,
        "wall_s": wall,
        "summary": summarise(log),
        "failures": log["failures"],
        "times": log["times"],
        "models": sorted(log.get("models", ())),
        "note": a.note,
    }
    print(markdown(r))
    if not a.no_write:
        OUT_JSON.write_text(json.dumps(r, indent=1))
        write_section(r)
    return r


if __name__ == "__main__":
    main()
