"""Start the app on a free localhost port and drive Debian's Chromium with Playwright."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def app_server(timeout: float = 90.0, env: dict | None = None):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", **(env or {}))
    log = open(ARTIFACTS.joinpath(f"server-{port}.log") if ARTIFACTS.exists() else os.devnull, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError("streamlit exited early")
        else:
            raise RuntimeError("streamlit did not become healthy")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


#: Software WebGL 2 for NiiVue (issue 18 item 5) in headless Chromium without a GPU: ANGLE on SwiftShader.
#: Measured here (Chromium 156, Debian 12): every variant tried gave WebGL 2 on "ANGLE (Google, Vulkan 1.3.0
#: (SwiftShader Device (Subzero)))", --disable-gpu included (Playwright's launcher already adds
#: --enable-unsafe-swiftshader); the flags are stated so that a Chromium without that default still gets it.
WEBGL_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


@contextlib.contextmanager
def browser(webgl: bool = False):
    """Headless Chromium; ``webgl=True`` drops --disable-gpu and adds :data:`WEBGL_ARGS`."""
    from playwright.sync_api import sync_playwright

    args = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + WEBGL_ARGS if webgl else CHROMIUM_ARGS
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield b
        finally:
            b.close()


def settled(page, timeout: float = 180_000) -> None:
    """Wait until the app's script run is over: no element left over from the previous run (Streamlit
    marks those stale) and no running spinner. Clicks made during a rerun hit elements that are about to
    be replaced (a download button reruns the app, which takes long on a busy machine)."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-stale=\"true\"]').length === 0"
        " && !document.querySelector('[data-testid=stStatusWidget] [data-testid=stSpinner]')",
        timeout=timeout,
    )
    page.wait_for_timeout(300)
