"""Where a 3D model's deterministic forward passes run: PyTorch or ONNX Runtime (CPU).

On this project's 2-core CPU, PyTorch's 3D convolutions reach about 5 % of the machine's matmul
throughput for the small spleen U-Net; ONNX Runtime runs the same graph about twice as fast with
the same float32 numbers (largest difference 1e-5 on the logits; ``make bench`` records both). So
on the CPU, 3D sliding-window inference runs its windows through ONNX Runtime when it is installed,
and through PyTorch otherwise, on CUDA, and whenever dropout must act (MC sampling needs the
PyTorch module in its dropout mode: an exported graph is the eval-mode network).

``MEDSEG_RUNTIME``: ``auto`` (default, as above), ``torch`` (never ONNX Runtime) or ``onnxruntime``
(fail loudly when it cannot be used instead of falling back). Exported graphs are kept in
``MEDSEG_CACHE`` (default ``~/.cache/medseg``) under the checkpoint's SHA-256, so a model is
exported once per machine. A model built in memory (no card: training, tests) always runs PyTorch,
its weights may still change. Every new session
is checked against the PyTorch module on one random window before use; a graph that differs by
more than :data:`TOLERANCE` is not used (a warning is logged and PyTorch runs).

Tried and not kept (measured, ``benchmarks/RESULTS.md``): channels-last-3d memory format (slower
than contiguous for these 3D convolutions), ``torch.compile`` (close to ONNX Runtime per window, but
about 40 s of compilation in every new process, which the app pays on a user's first click) and
bfloat16 autocast (as fast as ONNX Runtime here but not the same numbers: some boundary voxels change).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .checkpoints import LoadedModel

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")
#: largest absolute logit difference accepted between the exported graph and the PyTorch module
TOLERANCE = 1e-3
_LOCK = threading.Lock()
Forward = Callable[[torch.Tensor], torch.Tensor]
# per module (gone with it): (window, threads) -> the ONNX Runtime forward, or None when it failed
_SESSIONS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, Forward | None]] = weakref.WeakKeyDictionary()


def choice() -> str:
    """The runtime asked for by ``MEDSEG_RUNTIME`` (``auto`` when unset)."""
    value = os.environ.get("MEDSEG_RUNTIME", "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"MEDSEG_RUNTIME is {value!r}; use one of {', '.join(RUNTIMES)}")
    return value


def cache_dir() -> Path:
    return Path(os.environ.get("MEDSEG_CACHE") or Path.home() / ".cache" / "medseg")


def available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's package are importable."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def window_forward(loaded: LoadedModel, window: tuple[int, ...], stochastic: bool = False) -> tuple[Forward, str]:
    """The function that maps a batch of ``window``-sized inputs (B, C, *window) to the module's
    output, and the runtime's name ("onnxruntime" or "torch"). ``stochastic``: dropout must act
    (MC sampling), so the PyTorch module is returned."""
    want = choice()
    torch_path: tuple[Forward, str] = (loaded.module, "torch")
    sha = (loaded.card or {}).get("sha256")
    if want == "torch" or stochastic or str(loaded.device) != "cpu" or not sha:
        if want == "onnxruntime" and not stochastic and str(loaded.device) != "cpu":
            raise RuntimeError(f"MEDSEG_RUNTIME=onnxruntime runs on the CPU only, not on {loaded.device}")
        return torch_path
    if not available():
        if want == "onnxruntime":
            raise RuntimeError("MEDSEG_RUNTIME=onnxruntime but onnxruntime / onnx are not installed")
        return torch_path
    key = (tuple(window), torch.get_num_threads())
    with _LOCK:
        known = _SESSIONS.setdefault(loaded.module, {})
        if key not in known:
            known[key] = _session(loaded, tuple(window), str(sha), strict=want == "onnxruntime")
        fwd = known[key]
    return (fwd, "onnxruntime") if fwd is not None else torch_path


def _export(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    """The eval-mode module as an ONNX graph (TorchScript exporter; batch axis dynamic)."""
    import tempfile

    was_training = module.training
    module.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with torch.no_grad():
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    input_names=["x"],
                    output_names=["y"],
                    dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                    dynamo=False,
                )
        finally:
            module.train(was_training)
        return path.read_bytes()


def _session(loaded: LoadedModel, window: tuple[int, ...], sha: str, strict: bool) -> Forward | None:
    import onnxruntime as ort

    module = loaded.module
    channels = _in_channels(module)
    example = torch.randn((2, channels, *window), generator=torch.Generator().manual_seed(0))
    path = cache_dir() / "onnx" / f"{loaded.name}-{sha}-{'x'.join(map(str, window))}-torch{torch.__version__}.onnx"
    try:
        if path.exists():
            graph = path.read_bytes()
        else:
            import warnings

            with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice, once per export
                warnings.simplefilter("ignore")
                graph = _export(module, example)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(graph)
            tmp.replace(path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # an architecture the exporter cannot trace: PyTorch runs it
        if strict:
            raise
        log.warning("ONNX Runtime not used for %s (%s); running PyTorch", loaded.name, e)
        return None

    def forward(x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(sess.run(None, {"x": arr})[0])

    with torch.inference_mode():
        was_training = module.training
        module.eval()
        try:
            want = module(example)
        finally:
            module.train(was_training)
        got = forward(example)
    diff = float((got - want).abs().max()) if got.shape == want.shape else float("inf")
    if diff > TOLERANCE:
        msg = f"ONNX Runtime graph of {loaded.name} differs from PyTorch by {diff:.3g}"
        if strict:
            raise RuntimeError(msg)
        log.warning("%s; running PyTorch", msg)
        return None
    return forward


def _in_channels(module: torch.nn.Module) -> int:
    for m in module.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            return int(m.in_channels)
        if isinstance(m, torch.nn.Linear):
            return int(m.in_features)
    return 1
