"""``make bench`` = ``python benchmarks/run_all.py``: every benchmark in one run on this machine,
written to ``benchmarks/RESULTS.md`` (table + machine description) and ``benchmarks/results.json``.

Rows (each a median of several runs; ratios against a baseline measured in the same run):

1. dense float32 matmul GFLOP/s (the machine's reference);
2. per registry model: parameters, FLOPs per input (``torch.utils.flop_counter``), latency per 2D
   slice / per 3D window, achieved GFLOP/s and its fraction of the matmul figure;
3. ``predict`` on a 3D CT phantom vs a bare MONAI ``sliding_window_inference`` call with the same
   weights, roi, overlap and Gaussian blending (target ratio <= 1.10);
4. MC dropout, 10 samples with the cached encoder vs 10 naive full passes (target <= 0.5);
5. slice rendering: one overlay frame of a 512 x 512 slice, server side (target <= 30 ms), vs
   re-running the model (the replaced viewer's behaviour);
6. the app in Chromium: URL to first overlay on the default sample (cold server, target <= 15 s)
   and slider move to updated image (target median <= 300 ms);
7. peak RSS of ``predict`` with ``unet3d`` on CT volumes of three sizes up to 512 x 512 x 300
   (target <= 3 GB), each in a fresh process;
8. cohorts at scale: the failure gallery's counts + filter + sort on a generated cohort of 300 000
   slice rows (target <= 200 ms; ``benchmarks/cohort_bench.py``);
9. NiiVue in Chromium (issue 18 item 5; software WebGL): first view of the bundled CT with the mask after
   the prediction exists (target <= 3 s) and slice change (wheel event) to the repainted frame
   (target median <= 50 ms).

Nothing here runs in ``make test``. ``--quick`` shrinks repeats and sizes (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from cpu_speed import median_time  # noqa: E402  (benchmarks/, the script's folder)

from medseg_core.checkpoints import LoadedModel, checkpoint_status, load_model  # noqa: E402
from medseg_core.inference import PredictOptions, _forward, configure_threads, predict  # noqa: E402
from medseg_core.models import build_model, count_parameters, get_spec, list_models  # noqa: E402

OUT_MD = ROOT / "benchmarks" / "RESULTS.md"
OUT_JSON = ROOT / "benchmarks" / "results.json"


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


# ----------------------------------------------------------------------------- 1. matmul
def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = median_time(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / t / 1e9


# ----------------------------------------------------------------------------- 2. models
def _loaded(name: str) -> LoadedModel:
    if checkpoint_status(name) == "ok":
        return load_model(name)
    spec = get_spec(name)
    return LoadedModel(spec, build_model(name, "demo").eval(), {"input_size": list(_demo_size(spec))})


def _demo_size(spec) -> tuple:
    return (64, 64, 64) if spec.dims == "3d" else tuple(spec.input_size)


def model_rows(peak: float, quick: bool) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    for name in list_models():
        lm = _loaded(name)
        spec = lm.spec
        size = tuple(lm.size) if spec.dims == "2d" else (64, 64, 64)
        x = torch.randn(1, spec.in_channels, *size)
        opts = PredictOptions(menopausal=1, oncology_center=0)
        with torch.inference_mode():
            with FlopCounterMode(display=False) as fc:
                _forward(lm, x, opts)
            flops = fc.get_total_flops()
            reps = 2 if quick else (3 if spec.dims == "3d" else 7)
            lat = median_time(lambda lm=lm, x=x, opts=opts: _forward(lm, x, opts), reps)
        gf = flops / lat / 1e9
        rows.append(
            {
                "model": name,
                "parameters_M": round(count_parameters(lm.module) / 1e6, 2),
                "input": ("1 x " if spec.dims == "2d" else "window ") + " x ".join(map(str, size)),
                "gflops_per_input": round(flops / 1e9, 2),
                "latency_ms": round(lat * 1000, 1),
                "achieved_gflops_s": round(gf, 1),
                "fraction_of_matmul": round(gf / peak, 3),
                "checkpoint": checkpoint_status(name) == "ok",
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ----------------------------------------------------------------------------- 3. predict vs bare MONAI, CPU speed
def predict_vs_monai(quick: bool) -> dict:
    from cpu_speed import predict_vs_monai as run

    return run(quick)


def _cpu(quick: bool) -> dict:
    from cpu_speed import cpu_speed

    return cpu_speed(quick)


# ----------------------------------------------------------------------------- 4. MC dropout
def mc_rows(quick: bool) -> list[dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import mc_prefix

    return mc_prefix.main(n=10, repeats=1 if quick else 3)


# ----------------------------------------------------------------------------- 5. rendering
def render_row(quick: bool) -> dict:
    import torch.nn.functional as F

    from medseg_core.data.synthetic import abdominal_ct
    from medseg_core.io import Volume, display_slice
    from medseg_core.io.orientation import display_aspect
    from medseg_core.render import CT_PRESETS, apply_window, aspect_correct, compare_layers, overlay, slice_figure
    from medseg_core.samples import get_sample

    # a 512 x 512 CT slice: the abdominal phantom upsampled to 512 x 512 (0.75 mm pixels) with
    # pixel-level quantum noise of 12 HU added back, its spleen mask as reference and a shifted copy as
    # prediction (TP, FP and FN all present), shown with the abdomen window
    c = abdominal_ct(11)
    z0 = int(np.argwhere(c.masks["spleen"])[:, 0].mean())
    sl = torch.from_numpy(c.volume.array[z0 - 2 : z0 + 3])[None]
    up = F.interpolate(sl, size=(512, 512), mode="bilinear", align_corners=False)[0].numpy()
    arr = up + np.random.default_rng(0).normal(0, 12, up.shape).astype(np.float32)
    ms = torch.from_numpy(c.masks["spleen"][z0 - 2 : z0 + 3].astype(np.float32))[None]
    ref = (F.interpolate(ms, size=(512, 512), mode="nearest")[0].numpy() > 0).astype(np.uint8)
    pred = np.roll(ref, 9, axis=2)
    vol = Volume(arr, (2.5, 0.75, 0.75), np.diag([0.75, 0.75, 2.5, 1.0]), modality="CT")
    win = CT_PRESETS["Abdomen (liver/spleen)"]

    def frame():
        z = 2
        layers = compare_layers(display_slice(pred, "axial", z), display_slice(ref, "axial", z))
        rgb = overlay(apply_window(display_slice(vol.array, "axial", z), *win), layers, alpha=0.35)
        rgb = aspect_correct(rgb, *display_aspect(vol.spacing, "axial"))
        return slice_figure(rgb, "axial", title="axial").to_json()  # what is sent to the browser

    t_frame = median_time(frame, 5 if quick else 30, warmup=2)
    s = get_sample("pelvic")
    v, _, _ = s.load()
    lm = load_model("ovary_unet")
    t_model = median_time(lambda: predict(lm, v, PredictOptions()), 1 if quick else 3)
    return {
        "frame_512_ms": round(t_frame * 1000, 1),
        "rerun_model_ms": round(t_model * 1000, 1),
        "rerun_model_case": f"ovary_unet on the pelvic sample {' x '.join(map(str, v.shape))}",
        "speedup": round(t_model / t_frame, 1),
    }


# ----------------------------------------------------------------------------- 6. the app in Chromium
def app_row(quick: bool) -> dict:
    from browser import app_server, browser

    moves = 5 if quick else 12
    t0 = time.perf_counter()
    with app_server(timeout=120) as url, browser() as b:
        t_server = time.perf_counter() - t0
        page = b.new_page(viewport={"width": 1500, "height": 1100})
        t1 = time.perf_counter()
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("button", name="Run model").click(timeout=120_000)
        page.locator(".js-plotly-plot image").first.wait_for(timeout=120_000)
        t_first = time.perf_counter() - t1
        slider = page.get_by_role("slider", name="Slice")
        slider.focus()
        times = []
        for _ in range(moves):
            before = page.locator(".js-plotly-plot image").first.get_attribute("href")
            t = time.perf_counter()
            page.keyboard.press("ArrowRight")
            page.wait_for_function(
                "(b) => { const i = document.querySelector('.js-plotly-plot image');"
                " return i && i.getAttribute('href') !== b; }",
                arg=before,
                timeout=30_000,
            )
            times.append(time.perf_counter() - t)
            page.wait_for_timeout(150)
    return {
        "server_start_s": round(t_server, 2),
        "url_to_first_overlay_s": round(t_first, 2),
        "cold_total_s": round(t_server + t_first, 2),
        "slider_median_ms": round(statistics.median(times) * 1000),
        "slider_max_ms": round(max(times) * 1000),
        "moves": moves,
    }


# ----------------------------------------------------------------------------- 9. NiiVue (client-side viewer)
def niivue_row(quick: bool) -> dict:
    """Bundled CT, unet3d run on Segment & review; then (a) click "3D viewer" -> first screenshot of the NiiVue
    iframe showing the mask colour (multiplanar + 3D render; the polling screenshots count against it);
    (b) in the Axial view, page JS in the iframe sends one wheel event to the canvas and waits, frame by frame
    (requestAnimationFrame), for the canvas pixels to differ (tests/niivue_steps.py REPAINT_JS)."""
    from browser import app_server, browser
    from niivue_steps import NIIVUE_IFRAME, PRESERVE_BUFFER_JS, REPAINT_JS, open_ct_and_run, wait_for_colour

    from medseg_core.render import LABEL_COLOURS

    moves = 10 if quick else 40
    with app_server(timeout=120) as url, browser(webgl=True) as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.add_init_script(PRESERVE_BUFFER_JS)
        t_model = open_ct_and_run(page, url)
        t = time.perf_counter()
        page.locator("[data-testid=stSidebar]").get_by_role("link", name="3D viewer").click()
        page.locator(NIIVUE_IFRAME).first.wait_for(state="attached", timeout=120_000)
        t_iframe = time.perf_counter() - t  # the server's page run and the component's iframe
        page.locator(NIIVUE_IFRAME).first.element_handle().content_frame().wait_for_selector("canvas", timeout=120_000)
        t_canvas = time.perf_counter() - t  # + NiiVue's 1.2 MB of JavaScript and a WebGL 2 context
        wait_for_colour(page, LABEL_COLOURS[0], 0.6, min_pixels=100, timeout_s=120)
        t_first = time.perf_counter() - t  # + the volume and overlay decoded, shaders compiled, drawn
        page.get_by_role("radiogroup", name="View").get_by_text("Axial", exact=True).click()
        page.wait_for_timeout(1000)
        wait_for_colour(page, LABEL_COLOURS[0], 0.6)
        frame = page.locator(NIIVUE_IFRAME).first.element_handle().content_frame()
        w, h = frame.evaluate(
            "() => { const r = document.querySelector('canvas').getBoundingClientRect(); return [r.width, r.height]; }"
        )
        times, handler = [], []
        for k in range(moves):
            ms, in_handler = frame.evaluate(REPAINT_JS, [w / 2, h / 2, 100 if k % 2 == 0 else -100])
            handler.append(in_handler)
            if ms >= 0:
                times.append(ms)
            page.wait_for_timeout(100)
        load = os.getloadavg()[0]
    return {
        "model_s": round(t_model, 1),
        "first_view_s": round(t_first, 2),
        "iframe_s": round(t_iframe, 2),
        "canvas_s": round(t_canvas, 2),
        "moves": moves,
        "repainted": len(times),
        "repaint_median_ms": round(statistics.median(times), 1) if times else None,
        "repaint_p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 1) if times else None,
        "repaint_max_ms": round(max(times), 1) if times else None,
        "renderer": "ANGLE / SwiftShader (software WebGL 2)",
        "handler_median_ms": round(statistics.median(handler), 1),
        "load_average_1min": round(load, 1),
        "cpus": os.cpu_count(),
    }


# ----------------------------------------------------------------------------- 7. memory
_RSS_CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from medseg_core.checkpoints import load_model
from medseg_core.inference import PredictOptions, predict
from medseg_core.io import Volume
z, y, x = {shape}
lm = load_model("unet3d")
rng = np.random.default_rng(0)
arr = rng.normal(40, 20, (z, y, x)).astype(np.float32)
vol = Volume(arr, (1.5, 0.8, 0.8), np.diag([0.8, 0.8, 1.5, 1.0]), modality="CT")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
p = predict(lm, vol, PredictOptions())
sec, peak = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from medseg_core.budget import compact_prediction, prediction_bytes  # issue 21 item 2: what a session keeps
t = time.perf_counter()
c = compact_prediction(p)
print(json.dumps({{"seconds": sec, "peak_rss_mb": peak, "before_predict_mb": base / 1024,
                  "prediction_mb": prediction_bytes(p) / 2**20, "compact_mb": prediction_bytes(c) / 2**20,
                  "compact_s": time.perf_counter() - t}}))
"""


def memory_rows(quick: bool) -> list[dict]:
    from medseg_core.budget import compact_bytes_estimate

    shapes = [(75, 128, 128), (150, 256, 256), (300, 512, 512)]
    if quick:
        shapes = shapes[:2]
    rows = []
    for shape in shapes:
        code = _RSS_CHILD.format(root=str(ROOT), shape=shape)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            rows.append({"shape_zyx": " x ".join(map(str, shape)), "error": r.stderr[-300:]})
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "shape_zyx": " x ".join(map(str, shape)),
                "voxels_M": round(np.prod(shape) / 1e6, 1),
                "input_mb": round(np.prod(shape) * 4 / 2**20),
                "peak_rss_mb": round(res["peak_rss_mb"]),
                "rss_before_predict_mb": round(res["before_predict_mb"]),
                "seconds": round(res["seconds"], 1),
                "prediction_mb": round(res["prediction_mb"], 1),
                "compact_mb": round(res["compact_mb"], 1),
                "compact_s": round(res["compact_s"], 2),
                "worst_mb": round(compact_bytes_estimate(shape) / 2**20, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ----------------------------------------------------------------------------- 8. cohorts at scale
def _cohort(quick: bool) -> dict:
    from cohort_bench import cohort_bench

    res = cohort_bench(quick)
    print(json.dumps({k: v for k, v in res.items() if k != "counts"}), flush=True)
    return res


# ----------------------------------------------------------------------------- report
def _verdict(value, target, lower_is_better=True) -> str:
    ok = value <= target if lower_is_better else value >= target
    if ok:
        return "met"
    return f"missed by {abs(value / target - 1) * 100:.0f} %"


def _section_dates(r: dict) -> str:
    """When each section was last measured, where a partial run (``--only``) left sections of earlier runs."""
    dates = r.get("section_dates") or {}
    if len(set(dates.values())) <= 1:
        return ""
    by_date: dict[str, list[str]] = {}
    for key, d in dates.items():
        by_date.setdefault(d, []).append(key)
    return (
        " Sections by date of measurement: "
        + "; ".join(f"{d}: {', '.join(keys)}" for d, keys in sorted(by_date.items(), reverse=True))
        + "."
    )


def write_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Measured by `make bench` on {m['date']}: {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, "
        f"torch {m['torch']} ({m['threads']} threads), CUDA {'yes' if m['cuda'] else 'no'}, Python {m['python']}. "
        "Medians of several runs; ratios against baselines measured in the same run." + _section_dates(r),
        "",
        "## Headline",
        "",
        "| measurement | value | target | verdict |",
        "| --- | --- | --- | --- |",
    ]
    pv = r.get("predict_vs_monai")
    if pv:
        lines.append(
            f"| `predict` / bare MONAI sliding window with the PyTorch module (unet3d, CT {pv['volume']}) | "
            f"{pv['ratio']:.2f} ({pv['predict_s']:.2f} s vs {pv['bare_monai_s']:.2f} s) | <= 1.05 | "
            f"{_verdict(pv['ratio'], 1.05)} |"
        )
        if "ratio_same_runtime" in pv:
            lines.append(
                f"| `predict` / bare MONAI sliding window with the same module ({pv['runtime']}: what predict "
                f"adds around the windows) | {pv['ratio_same_runtime']:.2f} ({pv['predict_s']:.2f} s vs "
                f"{pv['bare_same_runtime_s']:.2f} s) | <= 1.05 | {_verdict(pv['ratio_same_runtime'], 1.05)} |"
            )
    for row in (r.get("cpu") or {}).get("big_ct", []):
        lines.append(
            f"| `predict` unet3d on CT {row['volume']}, {row['runtime']} | {row['seconds']:.1f} s | <= 5 s | "
            f"{_verdict(row['seconds'], 5.0)} |"
        )
    for row in r.get("mc", []):
        lines.append(
            f"| MC dropout 10 samples, cached encoder / naive ({row['model']}, {row['input']}) | {row['ratio']:.2f} "
            f"(equal: {row['equal']}) | <= 0.5 | {_verdict(row['ratio'], 0.5)} |"
        )
        if "batched_ratio" in row:
            lines.append(
                f"| MC dropout 10 samples, batched decoder / naive ({row['model']}, {row['input']}) | "
                f"{row['batched_ratio']:.2f} | <= 0.5 | {_verdict(row['batched_ratio'], 0.5)} |"
            )
    rr = r.get("render")
    if rr:
        lines.append(
            f"| overlay frame of a 512 x 512 slice, server side | {rr['frame_512_ms']:.1f} ms "
            f"(re-running the model: {rr['rerun_model_ms']:.0f} ms, x{rr['speedup']:.0f}) | <= 30 ms | "
            f"{_verdict(rr['frame_512_ms'], 30)} |"
        )
    ap = r.get("app")
    if ap:
        lines.append(
            f"| app: URL to first overlay, default sample (cold server) | {ap['url_to_first_overlay_s']:.1f} s "
            f"(+ {ap['server_start_s']:.1f} s server start) | <= 15 s | {_verdict(ap['url_to_first_overlay_s'], 15)} |"
        )
        lines.append(
            f"| app: slider move to updated image, median of {ap['moves']} | {ap['slider_median_ms']} ms "
            f"(max {ap['slider_max_ms']} ms) | <= 300 ms | {_verdict(ap['slider_median_ms'], 300)} |"
        )
    mem = [x for x in r.get("memory", []) if "peak_rss_mb" in x]
    if mem:
        big = mem[-1]
        lines.append(
            f"| peak RSS, `predict` unet3d on CT {big['shape_zyx']} | {big['peak_rss_mb'] / 1024:.2f} GB | "
            f"<= 3 GB | {_verdict(big['peak_rss_mb'] / 1024, 3.0)} |"
        )
        if "compact_mb" in big:
            lines.append(
                f"| one prediction kept by a session, unet3d on CT {big['shape_zyx']}, no uncertainty maps | "
                f"{big['compact_mb']:.0f} MiB measured, {big['worst_mb']:.0f} MiB at most (every mask non-empty); "
                f"float32 + uint8 masks: {big['prediction_mb']:.0f} MiB | <= 120 MB | "
                f"{_verdict(big['worst_mb'] * 2**20 / 1e6, 120)} |"
            )
    co = r.get("cohort")
    nv = r.get("niivue")
    if nv and nv.get("repaint_median_ms") is not None:
        lines.append(
            f"| NiiVue: first view of the bundled CT with the mask, after the prediction exists | "
            f"{nv['first_view_s']:.1f} s | <= 3 s | {_verdict(nv['first_view_s'], 3)} |"
        )
        lines.append(
            f"| NiiVue: slice change (wheel) to repainted frame, median of {nv['repainted']} | "
            f"{nv['repaint_median_ms']:.0f} ms (max {nv['repaint_max_ms']:.0f} ms) | <= 50 ms | "
            f"{_verdict(nv['repaint_median_ms'], 50)} |"
        )
    if co:
        lines.append(
            f"| gallery counts + filter + sort, cohort of {co['rows']:,} slice rows (slowest sort order) | "
            f"{co['refresh_worst_ms']:.0f} ms (load {co['load_s']:.2f} s) | <= 200 ms | "
            f"{_verdict(co['refresh_worst_ms'], 200)} |"
        )
    lines += [
        "",
        f"Dense float32 matmul (2048 x 2048): **{r['matmul_gflops']:.1f} GFLOP/s**.",
        "",
        "## Models",
        "",
        "FLOPs from `torch.utils.flop_counter` (multiply-add = 2 FLOPs) for one forward pass at the "
        "shipped checkpoint's input size (2D: one slice; 3D: one 64^3 sliding-window roi); latency of that pass "
        "(batch 1, inference mode).",
        "",
        "| model | parameters (M) | input | GFLOPs | latency (ms) | GFLOP/s | of matmul |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r.get("models", []):
        lines.append(
            f"| `{x['model']}`{'' if x['checkpoint'] else ' (no checkpoint: demo weights)'} | {x['parameters_M']} | "
            f"{x['input']} | {x['gflops_per_input']} | {x['latency_ms']} | {x['achieved_gflops_s']} | "
            f"{x['fraction_of_matmul'] * 100:.0f} % |"
        )
    if pv:
        lines += [
            "",
            "## predict vs bare MONAI",
            "",
            f"CT phantom {pv['volume']} voxels at {pv['spacing_mm']} mm (the abdominal phantom upsampled 2x), "
            f"resampled to the model grid {pv['model_grid']} (2 x 1.5 x 1.5 mm), roi 64^3, overlap 0.25, Gaussian "
            "blending. The bare calls get the input already preprocessed and resampled and return the model-grid "
            "logits; `predict` adds preprocessing, resampling both ways, thresholding, post-processing, the "
            "envelope check and progress reporting. Bare with the PyTorch module: "
            f"{pv['bare_monai_s']} s; bare with the same module as predict ({pv.get('runtime', 'PyTorch')}): "
            f"{pv.get('bare_same_runtime_s', pv['bare_monai_s'])} s; predict: {pv['predict_s']} s. Its timings: "
            + ", ".join(f"{k} {v}" for k, v in pv["predict_timings"].items())
            + ".",
        ]
    cpu = r.get("cpu")
    if cpu:
        lines += [
            "",
            "## CPU speed of 3D inference (unet3d)",
            "",
            "One batch of four 64^3 windows through the shipped unet3d, every way tried (median of 7; largest "
            "logit difference to PyTorch float32):",
            "",
            "| way | ms per batch | largest logit difference | note |",
            "| --- | --- | --- | --- |",
        ]
        for w in cpu["windows"]:
            note = w.get("note", "")
            if "bf16_changed_voxels" in w:
                note = (
                    f"whole predict on the CT phantom: {w['bf16_changed_voxels']} of {w['bf16_mask_voxels']} mask "
                    f"voxels change, Dice {w['bf16_dice']:.4f} to float32: not the same numbers, not kept"
                )
            diff = "" if w.get("max_logit_diff") is None else f"{w['max_logit_diff']:.2g}"
            ms = "not measured" if w["ms"] is None else w["ms"]
            lines.append(f"| {w['way']} | {ms} | {diff} | {note} |")
        lines += [
            "",
            "Kept: channels-last-3d weights for 3D models on the CPU (`medseg_core.runtime`: the same float32 "
            "numbers; MC dropout and TTA run the same module). Not kept: torch.compile (no faster, and its "
            "compilation is paid by every new server process on a user's first click), bfloat16 (changes masks), "
            "ONNX Runtime (measured in this section while it was installed, 2026-11-23: 66-108 ms per batch in "
            "`make bench`, 4.5-6.1 s for the 300 x 512 x 512 CT inside predict, where PyTorch's OpenMP threads "
            "compete with its pool; no MC dropout; two more dependencies).",
            "",
            "`predict` with unet3d on a 300 x 512 x 512 CT (random HU at 1.5 x 0.8 x 0.8 mm; model grid "
            "225 x 273 x 273, 180 windows), median of 3 after a warm-up:",
            "",
            "| layout | seconds | stage timings (s) |",
            "| --- | --- | --- |",
        ]
        for b in cpu["big_ct"]:
            t = ", ".join(f"{k.removesuffix('_s')} {v}" for k, v in b["timings"].items() if k != "threads")
            lines.append(f"| {b['runtime']} | {b['seconds']} | {t} |")
        if cpu.get("layout_2d"):
            lines += [
                "",
                "## 2D layout",
                "",
                "Every shipped 2D checkpoint, one batch of 8 slices at its input size, contiguous vs channels-last "
                "weights (medians, interleaved). `medseg_core.runtime.CHANNELS_LAST_2D` lists the architectures "
                "that use channels-last (chosen from this table: clearly faster here).",
                "",
                "| model | input | contiguous (ms) | channels-last (ms) | ratio | used |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for x in cpu["layout_2d"]:
                lines.append(
                    f"| `{x['model']}` | {x['input']} | {x['contiguous_ms']} | {x['channels_last_ms']} | "
                    f"{x['ratio']} | {'yes' if x['used'] else 'no'} |"
                )
    if r.get("mc"):
        lines += [
            "",
            "## MC dropout",
            "",
            "| model | input | naive 10 passes (s) | cached encoder (s) | ratio | equal | batched decoder (s) "
            "| ratio |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for x in r["mc"]:
            lines.append(
                f"| `{x['model']}` | {x['input']} | {x['naive_s']} |"
                f" {x['cached_encoder_s']} | {x['ratio']} | {x['equal']} |"
                f" {x.get('batched_s', '')} | {x.get('batched_ratio', '')} |"
            )
        lines += [
            "",
            "The cached-encoder ratio cannot go below the decoder's share of one forward pass: 10 samples cost "
            "one encoder pass plus 10 decoder passes, so the ratio is at least the decoder's share of a pass. In "
            "the narrow U-Nets the full-resolution decoder (with its concatenated skips) does about two thirds of "
            "the work, so they stay at 0.6-0.7 and miss the 0.5 target by design; the models with a heavy "
            "encoder (EfficientNet-B0; ResNet34 in TL-5) reach 0.4-0.55. The batched decoder "
            "(`PredictOptions(mc_batched=True)`: the 10 decoder passes in one call, other dropout masks from the "
            "same distribution) does not help on this CPU: the U-Net decoders are memory-bound, so a batch ten "
            "times larger takes more than ten times as long; only the EfficientNet-B0 model gains. It stays an "
            "option for GPUs; the default keeps the samples equal to the naive passes.",
        ]
    if mem:
        lines += [
            "",
            "## Memory of `predict` (unet3d, fresh process per size)",
            "",
            "| CT volume (Z x Y x X) | voxels (M) | input float32 (MB) |"
            " RSS before predict (MB) | peak RSS (MB) | seconds "
            "| prediction (MB) | kept compactly (MB) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for x in mem:
            lines.append(
                f"| {x['shape_zyx']} | {x['voxels_M']} | {x['input_mb']} | {x['rss_before_predict_mb']} | "
                f"{x['peak_rss_mb']} | {x['seconds']} | {x.get('prediction_mb', '')} | {x.get('compact_mb', '')} |"
            )
        lines += [
            "",
            "A prediction is kept by the app compactly (`medseg_core.budget.compact_prediction`): masks "
            "bit-packed (exact), probabilities uint8 (at most 1/510 off); uncertainty maps, when computed, "
            "add 1 byte a voxel each.",
        ]
    if ap:
        lines += [
            "",
            "## App",
            "",
            f"Server start {ap['server_start_s']} s; opening the URL, pressing Run model on the default "
            f"pelvic sample and waiting for the overlay: {ap['url_to_first_overlay_s']} s; slider moves (ArrowRight "
            f"on the Slice slider until the image changes): median {ap['slider_median_ms']} ms,"
            f" max {ap['slider_max_ms']} ms.",
        ]
    if rr:
        lines += [
            "",
            "## Rendering",
            "",
            f"One overlay frame of a 512 x 512 CT slice (the CT phantom upsampled to 512 x 512 with 12 HU pixel noise; "
            f"abdomen window, TP/FP/FN layers, square pixels, "
            f"plotly figure with the PNG-encoded picture, serialised): {rr['frame_512_ms']} ms. The replaced viewer "
            f"re-ran the model on every slider move: {rr['rerun_model_ms']} ms for {rr['rerun_model_case']}.",
        ]
    if nv:
        lines += [
            "",
            "## NiiVue (client-side viewer)",
            "",
            "Bundled CT (64 x 128 x 128), `unet3d` run on Segment & review "
            f"({nv['model_s']} s), then the 3D viewer page in headless Chromium with software WebGL 2 "
            f'({nv["renderer"]}; flags in `tests/browser.py` WEBGL_ARGS). First view: click on "3D viewer" to the '
            f"first iframe screenshot showing the mask colour (multiplanar + 3D render): {nv['first_view_s']} s"
            + (
                f" (iframe attached after {nv['iframe_s']} s: the server's page run; canvas after {nv['canvas_s']} s: "
                "NiiVue's 1.2 MB of JavaScript parsed and a WebGL 2 context made; the rest: volume and overlay "
                "decoded, shaders compiled and the first frames drawn by SwiftShader on the CPU). "
                if "canvas_s" in nv
                else ". "
            )
            + f"Slice change: one wheel event sent to the canvas by page JS in the iframe, then the first "
            f"requestAnimationFrame whose canvas pixels differ (WebGL buffer preserved for the read-back): median "
            f"{nv['repaint_median_ms']} ms, 90th percentile {nv['repaint_p90_ms']} ms, max {nv['repaint_max_ms']} ms "
            f"({nv['repainted']} of {nv['moves']} events repainted);"
            f" of which NiiVue's wheel handler (draw + gl.finish, on "
            f"the CPU rasteriser) {nv.get('handler_median_ms')} ms median. No server round trip is involved. "
            f"Load average during the run: {nv.get('load_average_1min')} on {nv.get('cpus')} CPUs (the app "
            "server and Chromium's software rasteriser share them); a GPU-backed browser draws a slice in a few ms.",
        ]
    if co:
        f = co["filter"]
        lines += [
            "",
            "## Cohorts at scale",
            "",
            f"A generated cohort run (`medseg_core.cohort_store.synthetic_run`: 4 models x "
            f"3 option sets x 500 cases x 50 slices = {co['rows']:,} slice rows, realistic tag mix, case ids like "
            f'"0007") in the Parquet store ({co["store_mb"]} MB, written in {co["generate_s"]} s); loading it into '
            f"the columnar table: {co['load_s']} s. One gallery refresh = tag counts of the whole run + filter "
            f"(tags {', '.join(f['tags'])}; models {', '.join(f['models'])}; set {', '.join(f['sets'])}; Dice* "
            f"{f['dice_range'][0]}-{f['dice_range'][1]}; uncertainty {f['uncertainty_range'][0]}-"
            f"{f['uncertainty_range'][1]} nats: {co['matching']} rows) + sort + the first 12 rows as dicts "
            "(medians, ms):",
            "",
            "| sort order | refresh (ms) |",
            "| --- | --- |",
        ]
        lines += [f"| {k} | {v} |" for k, v in co["refresh_ms"].items()]
        lines += ["", "Parts (ms): " + ", ".join(f"{k} {v}" for k, v in co["steps_ms"].items()) + "."]
    lines += ["", f"Total benchmark time: {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and sizes (smoke run)")
    sections = "matmul models predict mc cpu render app memory cohort niivue"
    ap.add_argument("--only", nargs="*", default=None, help=sections)
    a = ap.parse_args(argv)
    configure_threads()
    t0 = time.perf_counter()
    want = set(a.only or ["matmul", "models", "predict", "mc", "cpu", "render", "app", "memory", "cohort", "niivue"])
    old = json.loads(OUT_JSON.read_text()) if (a.only and OUT_JSON.exists()) else {}
    r = dict(old)
    r["machine"] = machine()
    if "matmul" in want or "matmul_gflops" not in r:
        r["matmul_gflops"] = matmul_gflops(repeats=3 if a.quick else 7)
        print("matmul GFLOP/s", round(r["matmul_gflops"], 1), flush=True)
    steps = [
        ("models", lambda: model_rows(r["matmul_gflops"], a.quick)),
        ("predict_vs_monai", lambda: predict_vs_monai(a.quick)),
        ("mc", lambda: mc_rows(a.quick)),
        ("cpu", lambda: _cpu(a.quick)),
        ("render", lambda: render_row(a.quick)),
        ("app", lambda: app_row(a.quick)),
        ("memory", lambda: memory_rows(a.quick)),
        ("cohort", lambda: _cohort(a.quick)),
        ("niivue", lambda: niivue_row(a.quick)),
    ]
    for key, fn in steps:
        short = "predict" if key == "predict_vs_monai" else key
        if short in want:
            t = time.perf_counter()
            r[key] = fn()
            r.setdefault("section_dates", {})[key] = r["machine"]["date"]  # a partial run (--only) keeps the rest
            print(f"== {key} done in {time.perf_counter() - t:.0f} s", flush=True)
    r["seconds"] = time.perf_counter() - t0
    OUT_JSON.write_text(json.dumps(r, indent=1, default=str))
    OUT_MD.write_text(write_markdown(r))
    lt = ROOT / "benchmarks" / "loadtest.json"
    if lt.exists():  # make loadtest's section (benchmarks/loadtest.py) survives a make bench
        from loadtest import write_section

        write_section(json.loads(lt.read_text()))
    print(OUT_MD.read_text())
    return r


if __name__ == "__main__":
    main()
