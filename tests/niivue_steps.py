"""Chromium steps shared by the NiiVue browser test and ``make bench`` (issue 18 item 5)."""

from __future__ import annotations

import io
import time

import numpy as np

NIIVUE_IFRAME = "iframe[title*=niivue]"
CT_SAMPLE = "Abdominal CT (synthetic): spleen"

#: Run in every frame before its scripts (Playwright's add_init_script reaches the component's iframe):
#: WebGL contexts keep their drawing buffer, so page JS can read a frame's pixels after it was shown.
#: Only the measurement needs it; the app does not ask for it. It adds a buffer copy per frame, so
#: latencies measured with it are, if anything, slower than without.
PRESERVE_BUFFER_JS = """
(() => {
  const orig = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (kind, attrs) {
    if (kind === 'webgl2' || kind === 'webgl') {
      attrs = Object.assign({}, attrs || {}, {preserveDrawingBuffer: true});
    }
    return orig.call(this, kind, attrs);
  };
})();
"""

#: In the NiiVue iframe: send one wheel event to the canvas at (x, y) (CSS px in the canvas) and
#: resolve with [ms from the event to the first animation frame whose pixels differ, ms spent in the handler].
REPAINT_JS = """
async ([x, y, dy]) => {
  const c = document.querySelector('canvas');
  const off = document.createElement('canvas'); off.width = c.width; off.height = c.height;
  const ctx = off.getContext('2d', {willReadFrequently: true});
  const grab = () => { ctx.clearRect(0, 0, off.width, off.height); ctx.drawImage(c, 0, 0);
                       return ctx.getImageData(0, 0, off.width, off.height).data; };
  const before = grab();
  const r = c.getBoundingClientRect();
  const t0 = performance.now();
  c.dispatchEvent(new WheelEvent('wheel', {deltaY: dy, deltaMode: 0, clientX: r.left + x, clientY: r.top + y,
                                           bubbles: true, cancelable: true}));
  const handler = performance.now() - t0;  // NiiVue draws inside its wheel handler (drawScene ends in gl.finish)
  return await new Promise((resolve) => {
    const tick = () => {
      const now = grab();
      let diff = 0;
      for (let i = 0; i < now.length; i += 4) { if (now[i] !== before[i] || now[i + 1] !== before[i + 1]) { diff++; } }
      if (diff > 50) { resolve([performance.now() - t0, handler]); }
      else if (performance.now() - t0 > 5000) { resolve([-1, handler]); }
      else { requestAnimationFrame(tick); }
    };
    requestAnimationFrame(tick);
  });
}
"""


def rgb_of(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def colour_pixels(rgb: np.ndarray, colour, opacity: float, tol: int = 60) -> np.ndarray:
    """Pixels whose colour is ``colour`` blended at ``opacity`` over some grey: pixel - opacity * colour
    must be grey (equal channels within ``tol``) and the pixel must differ from grey."""
    c = np.asarray(colour, dtype=float)
    rest = rgb - opacity * c  # = (1 - opacity) * grey if blended
    grey_rest = (np.ptp(rest, axis=-1) < tol) & (rest.min(axis=-1) > -tol)
    return grey_rest & (np.ptp(rgb, axis=-1) > 40)


def open_ct_and_run(page, url: str) -> float:
    """Open the bundled CT on Load case, press Run model on Segment & review; seconds the model took."""
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_text("Research use only").wait_for(timeout=90_000)
    side = page.locator("[data-testid=stSidebar]")
    side.get_by_role("link", name="Load case").click()
    page.locator("[data-testid=stSelectbox]").filter(has_text="Sample case").wait_for(timeout=60_000)
    page.locator("[data-testid=stSelectbox]").filter(has_text="Sample case").click()
    page.get_by_role("option", name=CT_SAMPLE).click()
    page.get_by_role("button", name="Open sample").click()
    side.get_by_text("abdomen_ct", exact=False).first.wait_for(timeout=90_000)
    page.wait_for_timeout(500)
    side.get_by_role("link", name="Segment & review").click()
    t = time.perf_counter()
    page.get_by_role("button", name="Run model").click(timeout=120_000)
    page.get_by_text("Timings:").wait_for(timeout=400_000)
    return time.perf_counter() - t


def canvas_rgb(page) -> np.ndarray:
    return rgb_of(page.locator(NIIVUE_IFRAME).first.screenshot())


def wait_for_colour(page, colour, opacity: float, min_pixels: int = 100, timeout_s: float = 120.0):
    """Poll the NiiVue iframe until ``colour`` (blended at ``opacity``) covers ``min_pixels``;
    returns (seconds waited, rgb, boolean map)."""
    t = time.perf_counter()
    page.locator(NIIVUE_IFRAME).first.wait_for(timeout=int(timeout_s * 1000))
    while True:
        rgb = canvas_rgb(page)
        hit = colour_pixels(rgb, colour, opacity)
        if hit.sum() >= min_pixels:
            return time.perf_counter() - t, rgb, hit
        if time.perf_counter() - t > timeout_s:
            raise AssertionError(f"mask colour {colour} not drawn in the NiiVue canvas ({int(hit.sum())} pixels)")
        page.wait_for_timeout(50)
