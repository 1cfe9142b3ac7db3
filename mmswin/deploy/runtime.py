"""Run an exported graph with ONNX Runtime or OpenVINO and compare it with
PyTorch: the numbers behind the export tool's parity table."""
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np


class OrtRunner:
    """ONNX Runtime (CPU) session on an exported file.

    ``runner(images)`` takes ``(B, 3, H, W)`` float32 and returns the graph's
    outputs as numpy arrays, in order.
    """

    name = 'onnxruntime'

    def __init__(self, path: str, threads: int = 0) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            path, options, providers=['CPUExecutionProvider'])

    def __call__(self, images: np.ndarray) -> List[np.ndarray]:
        return self.session.run(None, {'images': images})


class OpenVinoRunner:
    """OpenVINO (CPU) on the same ONNX file, at fp32 precision (its CPU
    plugin would otherwise pick bf16 where the processor has it)."""

    name = 'openvino'

    def __init__(self, path: str, threads: int = 0) -> None:
        import openvino as ov
        config = {'INFERENCE_PRECISION_HINT': 'f32'}
        if threads:
            config['INFERENCE_NUM_THREADS'] = threads
        self.model = ov.Core().compile_model(path, 'CPU', config)

    def __call__(self, images: np.ndarray) -> List[np.ndarray]:
        outputs = self.model(images)
        return [np.asarray(outputs[port]) for port in self.model.outputs]


def available_runners() -> Dict[str, type]:
    """The runtimes installed here, by name."""
    runners = {}
    for runner, module in ((OrtRunner, 'onnxruntime'),
                           (OpenVinoRunner, 'openvino')):
        try:
            __import__(module)
        except ImportError:
            continue
        runners[runner.name] = runner
    return runners


def max_abs_diffs(reference: Sequence[np.ndarray],
                  outputs: Sequence[np.ndarray],
                  names: Sequence[str]) -> Dict[str, float]:
    """Largest ``|reference - output|`` per output name; ``inf`` where the
    shapes differ (e.g. another number of detections), and for integer
    outputs (labels) 0 if equal, else ``inf``."""
    diffs = {}
    for name, ref, out in zip(names, reference, outputs):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            diffs[name] = float('inf')
        elif ref.size == 0:
            diffs[name] = 0.0
        elif np.issubdtype(ref.dtype, np.integer):
            diffs[name] = 0.0 if np.array_equal(ref, out) else float('inf')
        else:
            diffs[name] = float(np.abs(ref.astype(np.float64) - out).max())
    return diffs


def median_seconds(run: Callable[[], object], repeats: int = 5,
                   warmup: int = 1) -> float:
    """Median wall time of ``run()`` over ``repeats`` calls after
    ``warmup`` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def random_shapes(count: int, size: Tuple[int, int], min_side: int,
                  max_batch: int, seed: int = 0
                  ) -> List[Tuple[int, int, int, int]]:
    """``count`` input shapes ``(B, 3, H, W)`` around ``size``: sides drawn
    from ``[max(min_side, size / 2), 1.5 * size]`` (so mostly not multiples
    of 4, 7 or 32), batch from ``1..max_batch``."""
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(count):
        sides = [int(rng.integers(max(min_side, s // 2), s * 3 // 2 + 1))
                 for s in size]
        shapes.append((int(rng.integers(1, max_batch + 1)), 3, *sides))
    return shapes


def random_images(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """Float32 images with pixel values in ``[0, 255]``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=tuple(shape)).astype(np.float32)


def parity_rows(reference: Callable[[np.ndarray], Sequence[np.ndarray]],
                runners: Sequence, shapes: Sequence[Sequence[int]],
                names: Sequence[str], seed: int = 0) -> List[Dict]:
    """Each runner against ``reference`` (PyTorch) on random images of each
    shape.

    Returns:
        One dict per (shape, runner): ``shape``, ``runtime``, ``diffs``
        (:func:`max_abs_diffs`) and ``scale`` (largest ``|reference|`` per
        output, to read the diffs against).
    """
    rows = []
    for index, shape in enumerate(shapes):
        images = random_images(shape, seed + index)
        expected = reference(images)
        scale = {name: float(np.abs(np.asarray(ref, np.float64)).max())
                 if np.asarray(ref).size else 0.0
                 for name, ref in zip(names, expected)}
        for runner in runners:
            rows.append(dict(shape=tuple(shape), runtime=runner.name,
                             diffs=max_abs_diffs(expected, runner(images),
                                                 names),
                             scale=scale))
    return rows
