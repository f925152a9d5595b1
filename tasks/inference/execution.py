"""How an ensemble's network is run on a device: the fastest of its equivalent paths, by measurement.

One ``FusedUNet`` can be evaluated several ways that give the same numbers (to float32
round-off) and whose speed depends on the device, the torch build and the frame size:

- ``fused``: one pass through the grouped convolutions (one launch per layer: a GPU's shape);
- ``loop``: the members one after another, each a plain U-Net (in the torch 2.13 CPU build
  grouped convolutions run at ~14 GMAC/s against ~41 for plain ones, benchmarks/README.md);
- ``fused-nchw`` / ``loop-nchw``: the same in torch's default memory layout rather than
  channels-last (oneDNN prefers NHWC for thin convolutions on most CPUs, not all);
- ``onnx``: the fused graph in ONNX Runtime (CPU only; its grouped convolutions are not the
  slow path torch's are), built from the weights here, no exporter involved;
- ``bf16``: the member loop in bfloat16 — not equivalent (logits move by ~0.2), so never
  chosen automatically; only when asked for by name, on a device that has bfloat16.

``Execution`` measures the exact paths on the first batch of each shape (a short trial,
alternating, after one warm-up call each) and keeps the fastest for that shape: the choice
is never a constant, it is made on the device and build it runs on. Speed depends on the
architecture, not the weights, so the choice is kept for the process per (members, widths,
classes, device, threads, input shape): a member selection of the same size, or the next
model version, does not pay the trial again. A path whose outputs
differ from the fused pass by more than ``TOLERANCE`` is refused; a path that cannot be
built here (no onnxruntime, not a CPU) is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from scopeflow.errors import InputError

from .network import FusedUNet

log = logging.getLogger(__name__)

# Outputs as the ensemble uses them: class probabilities and offsets (model px) within this
# absolute, encoder features within it relative to (1 + |value|). float32 round-off of a dozen
# convolutions summed in another order stays under half of it on the shipped ensemble.
TOLERANCE = 1e-5
EXACT = ("fused", "loop", "fused-nchw", "loop-nchw", "onnx")  # candidates of the automatic choice
INEXACT = ("bf16",)  # only by name
PATHS = EXACT + INEXACT
TRIAL_ROUNDS = 3  # timed calls per path after its warm-up (the minimum is kept: load only adds)

Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _layout(net: FusedUNet, device: torch.device, channels_last: bool) -> FusedUNet:
    net = net.to(device).eval()
    return net.to(memory_format=torch.channels_last) if channels_last else net


def _fused(net: FusedUNet, channels_last: bool) -> Runner:
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return net.logits_and_features(x.contiguous(memory_format=fmt))

    return run


def _loop(nets: list[FusedUNet], channels_last: bool, dtype: torch.dtype = torch.float32) -> Runner:
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(dtype).contiguous(memory_format=fmt)
        n, _, h, w = x.shape
        # Each member writes its outputs into its slot of the batch's (no concatenation after).
        raw = torch.empty((n, len(nets), nets[0].outputs, h, w), dtype=torch.float32, device=x.device)
        features = [m.logits_and_features(x, raw[:, k : k + 1])[1] for k, m in enumerate(nets)]
        return raw, torch.cat(features, dim=1).float()

    return run


def _members(net: FusedUNet, device: torch.device, channels_last: bool) -> list[FusedUNet]:
    return [_layout(net.member(k), device, channels_last) for k in range(net.members)]


def _has_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # oneDNN runs bfloat16 natively only where the CPU has the instructions (AVX512-BF16, AMX);
    # elsewhere it emulates them, slower than float32.
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def build(name: str, net: FusedUNet, device: torch.device) -> Runner:
    """The runner of path ``name`` for ``net`` on ``device``; ``RuntimeError`` if it cannot run here."""
    if name not in PATHS:
        raise InputError(f"unknown execution path {name!r}; known: {', '.join(PATHS)}")
    if name == "fused":
        return _fused(_layout(net, device, True), True)
    if name == "fused-nchw":
        # A copy: the ensemble's own module stays in the layout the other paths share.
        return _fused(_layout(net.select(list(range(net.members))), device, False), False)
    if name == "loop":
        return _loop(_members(net, device, True), True)
    if name == "loop-nchw":
        return _loop(_members(net, device, False), False)
    if name == "bf16":
        if not _has_bf16(device):
            raise RuntimeError(f"no native bfloat16 on {device}")
        return _loop([m.to(torch.bfloat16) for m in _members(net, device, True)], True, torch.bfloat16)
    if device.type != "cpu":
        raise RuntimeError("ONNX Runtime path is built for the CPU only")
    return _onnx(net, torch.get_num_threads())


@dataclass
class Choice:
    """What a trial found for one input shape: the path kept and every path's best time (s)."""

    path: str
    seconds: dict[str, float]
    refused: dict[str, str] = field(default_factory=dict)


_CHOICES: dict[tuple, Choice] = {}  # see the module docstring; filled by Execution's trials


class Execution:
    """Runs ``net`` (a ``FusedUNet`` already on ``device``) by the fastest exact path per input shape.

    ``path`` ``"auto"`` measures (see the module docstring); a path's name forces it (an
    error if it cannot run here). Runners are rebuilt when the weights change in place.
    """

    def __init__(self, net: FusedUNet, device: torch.device, path: str = "auto") -> None:
        if path != "auto" and path not in PATHS:
            raise InputError(f"unknown execution path {path!r}; known: auto, {', '.join(PATHS)}")
        self.net = net
        self.device = device
        self.path = path
        self._runners: dict[tuple[str, int], Runner | None] = {}
        self._weights = self._weights_version()

    def _weights_version(self) -> tuple[int, int]:
        # In-place updates (an optimiser step, load_state_dict) bump a tensor's version counter:
        # member copies and ONNX graphs hold the old weights then.
        return id(self.net), sum(p._version for p in self.net.parameters())

    def runner(self, name: str) -> Runner | None:
        """Path ``name``'s runner, or None where it cannot run here (logged once)."""
        if self._weights_version() != self._weights:
            self._runners.clear()
            self._weights = self._weights_version()
        # ONNX Runtime's pool is sized when its session is made: a new thread count, a new runner.
        key = (name, torch.get_num_threads())
        if key not in self._runners:
            try:
                self._runners[key] = build(name, self.net, self.device)
            except (ImportError, RuntimeError) as exc:
                log.info("execution path %s unavailable on %s: %s", name, self.device, exc)
                self._runners[key] = None
        return self._runners[key]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K, n_classes + 2, H, W) and encoder features (B, K·c3) of frames ``x`` (B, 1, H, W)."""
        if self.path != "auto":
            run = self.runner(self.path)
            if run is None:
                raise InputError(f"execution path {self.path!r} cannot run on {self.device} here")
            return run(x)
        choice = _CHOICES.get(self._key(x))
        if choice is not None:
            run = self.runner(choice.path)
            if run is not None:
                return run(x)
        return self._trial(x)

    def chosen(self, x: torch.Tensor) -> str | None:
        """The path that runs frames of ``x``'s shape at this thread count: the named path, or
        the one a trial chose; None while no trial has been made for that shape."""
        if self.path != "auto":
            return self.path
        choice = _CHOICES.get(self._key(x))
        return None if choice is None else choice.path

    def _prefix(self) -> tuple:
        net = self.net
        return (net.members, net.widths, net.n_classes, str(self.device), torch.get_num_threads())

    def _key(self, x: torch.Tensor) -> tuple:
        return (*self._prefix(), *x.shape)

    @property
    def choices(self) -> dict[tuple[int, ...], Choice]:
        """The choices made for this network's architecture on this device, by input shape."""
        mine = self._prefix()
        return {key[len(mine) :]: c for key, c in _CHOICES.items() if key[: len(mine)] == mine}

    def _trial(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Time every exact path on ``x`` (alternating rounds) and keep the fastest for its shape."""
        reference = self.runner("fused")
        assert reference is not None  # torch's own path runs everywhere
        expected = reference(x)
        runners: dict[str, Runner] = {"fused": reference}
        refused: dict[str, str] = {}
        for name in EXACT[1:]:
            run = self.runner(name)
            if run is None:
                refused[name] = "unavailable"
                continue
            got = run(x)  # also the warm-up: kernels and arenas are made on first use
            err = excess(got, expected, self.net.n_classes)
            if err > 1.0:
                refused[name] = f"differs from the fused pass ({err:.1f}× the tolerance)"
                log.warning("execution path %s refused: outputs %.1f× the tolerance", name, err)
                continue
            runners[name] = run
        best: dict[str, float] = dict.fromkeys(runners, float("inf"))
        for _ in range(TRIAL_ROUNDS if len(runners) > 1 else 0):
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                best[name] = min(best[name], time.perf_counter() - start)
        path = min(best, key=best.__getitem__)
        _CHOICES[self._key(x)] = Choice(path, best, refused)
        log.info("execution for %s on %s: %s (%s)", tuple(x.shape), self.device, path, best)
        return expected


def forget_choices() -> None:
    """Drop every choice made in this process (the next batch of each shape is timed again)."""
    _CHOICES.clear()


def excess(
    got: tuple[torch.Tensor, torch.Tensor], expected: tuple[torch.Tensor, torch.Tensor], n_classes: int
) -> float:
    """How far a path's (logits, features) are from ``expected``, in units of ``TOLERANCE``
    (see there): above 1 is outside it."""
    if any(a.shape != b.shape for a, b in zip(got, expected, strict=True)):
        return float("inf")
    (raw, feats), (raw_ref, feats_ref) = (
        tuple(t.detach().float().cpu() for t in pair) for pair in (got, expected)
    )
    probs = (raw[:, :, :n_classes].sigmoid() - raw_ref[:, :, :n_classes].sigmoid()).abs()
    offsets = (raw[:, :, n_classes:] - raw_ref[:, :, n_classes:]).abs()
    features = (feats - feats_ref).abs() / (1.0 + feats_ref.abs())
    return max((float(t.max()) if t.numel() else 0.0) for t in (probs, offsets, features)) / TOLERANCE


def _onnx(net: FusedUNet, threads: int) -> Runner:
    """The fused network as an ONNX graph in an ONNX Runtime session (frames of one channel).

    The graph is written from the weights, op for op as ``FusedUNet.logits_and_features``
    computes (space-to-depth and pixel_unshuffle agree for one input channel; depth-to-space
    in CRD mode is pixel_shuffle; nearest resize with floor and asymmetric coordinates is
    ``F.interpolate``'s nearest): no tracing exporter, so nothing here depends on one.
    """
    import onnx  # optional: the path is skipped where they are not installed
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, outputs = net.members, net.outputs
    nodes: list = []
    inits = []

    def conv(name: str, inp: str) -> str:
        layer: torch.nn.Conv2d = getattr(net, name)
        inits.append(numpy_helper.from_array(layer.weight.detach().cpu().float().numpy(), f"{name}.w"))
        inits.append(numpy_helper.from_array(layer.bias.detach().cpu().float().numpy(), f"{name}.b"))
        pad, kernel = layer.padding, layer.kernel_size
        nodes.append(
            helper.make_node(
                "Conv",
                [inp, f"{name}.w", f"{name}.b"],
                [name],
                group=layer.groups,
                kernel_shape=list(kernel),
                pads=[pad[0], pad[1], pad[0], pad[1]],
                strides=list(layer.stride),
                dilations=list(layer.dilation),
            )
        )
        return name

    def op(kind: str, inputs: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def up(inp: str, out: str) -> str:
        return op(
            "Resize",
            [inp, "", "up.scales"],
            out,
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )

    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "up.scales"))
    x = op("SpaceToDepth", ["x"], "stem", blocksize=2)
    if k > 1:
        x = op("Concat", [x] * k, "stem.k", axis=1)
    s1 = op("Relu", [conv("e1b", op("Relu", [conv("e1a", x)], "e1a.r"))], "s1")
    s2 = op("Relu", [conv("e2b", op("Relu", [conv("e2a", s1)], "e2a.r"))], "s2")
    b = op("Relu", [conv("e3b", op("Relu", [conv("e3a", s2)], "e3a.r"))], "bottleneck")
    y = op("Relu", [op("Add", [conv("u2", up(b, "b.up")), s2], "u2.s")], "u2.r")
    y = op("Relu", [conv("d2", y)], "d2.r")
    y = op("Relu", [op("Add", [conv("u1", up(y, "d2.up")), s1], "u1.s")], "u1.r")
    y = op("Relu", [conv("d1", y)], "d1.r")
    op("DepthToSpace", [conv("head", y)], "raw", blocksize=2, mode="CRD")
    op("Flatten", [op("GlobalAveragePool", [b], "pooled")], "features", axis=1)
    graph = helper.make_graph(
        nodes,
        "fused_unet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, "h", "w"])],
        [
            helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["b", k * outputs, "h", "w"]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["b", k * net.widths[2]]),
        ],
        inits,
    )
    # IR version 8 is opset 17's: an onnxruntime older than the onnx package then still loads it.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: the frame check runs on the same cores right
    # after each batch, and a spinning pool would take its CPU.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != 1:
            raise InputError(f"the ONNX path takes frames of one channel, got {x.shape[1]}")
        frames = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        raw, feats = session.run(None, {"x": frames})
        n, _, h, w = raw.shape
        return torch.from_numpy(raw).reshape(n, k, outputs, h, w), torch.from_numpy(feats)

    return run
