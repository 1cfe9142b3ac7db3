"""Run an exported graph with ONNX Runtime or OpenVINO.

:func:`make_runner` opens an ``.onnx`` file (either runtime) or an
OpenVINO ``.xml`` (OpenVINO) on the CPU, at fp32 or, with OpenVINO, bf16,
and returns a runner whose inputs and outputs go by name. int8 models
(``tools/deployment/quantize.py``) are just other model files.
:class:`OrtRunner` and :class:`OpenVinoRunner` are the older positional
form (``runner(images)`` -> list of outputs in order) behind the export
tool's parity table, whose helpers live here too.
"""
import os
import os.path as osp
import re
import time
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .signal_stack import keep_signal_stack

BACKENDS = ('onnxruntime', 'openvino')
PRECISIONS = ('fp32', 'bf16')
# OpenVINO's names for the inference precision hint.
_OV_PRECISION = {'fp32': 'f32', 'bf16': 'bf16'}
# /proc/cpuinfo flags of CPUs with bf16 arithmetic (AVX-512 BF16 dot
# products; AMX tiles).
_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def import_openvino():
    """``import openvino``, made safe under a preloaded allocator.

    With tcmalloc or jemalloc in ``LD_PRELOAD`` (PyTorch's CPU guide
    recommends either) OpenVINO's first compile dies: its oneTBB loads
    hwloc with ``RTLD_DEEPBIND``, so hwloc frees the preloaded allocator's
    memory with glibc's ``free``. oneTBB's ``TBB_ENABLE_SANITIZERS=1``
    drops the deep binding; it is set (unless set already) before TBB
    starts.
    """
    if re.search(r'tcmalloc|jemalloc', os.environ.get('LD_PRELOAD', '')):
        os.environ.setdefault('TBB_ENABLE_SANITIZERS', '1')
    import openvino
    return openvino


def _openvino_capabilities() -> Optional[List[str]]:
    """OpenVINO CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. ``FP32``,
    ``BF16``, ``INT8``), None without OpenVINO."""
    try:
        ov = import_openvino()
    except ImportError:
        return None
    with keep_signal_stack():  # the query loads the CPU plugin
        return [str(c) for c in ov.Core().get_property(
            'CPU', 'OPTIMIZATION_CAPABILITIES')]


def _cpuinfo_flags(path: str = '/proc/cpuinfo') -> Optional[set]:
    """The CPU flags in ``/proc/cpuinfo``, None where it is unreadable."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    match = re.search(r'^flags\s*:(.*)$', text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def bf16_support() -> Tuple[bool, str]:
    """Whether this CPU computes in bf16, and the evidence in words:
    OpenVINO's ``OPTIMIZATION_CAPABILITIES`` listing ``BF16``, else an
    ``avx512_bf16``/``amx_bf16`` flag in ``/proc/cpuinfo``."""
    capabilities = _openvino_capabilities()
    if capabilities is not None and 'BF16' in capabilities:
        return True, 'OpenVINO lists BF16 in the CPU\'s capabilities'
    flags = _cpuinfo_flags()
    found = sorted(set(_BF16_FLAGS) & (flags or set()))
    if found:
        return True, f'/proc/cpuinfo has {", ".join(found)}'
    why = []
    if capabilities is not None:
        why.append('OpenVINO\'s CPU capabilities are '
                   f'{", ".join(capabilities)} (no BF16)')
    why.append('/proc/cpuinfo is unreadable' if flags is None else
               f'/proc/cpuinfo has neither {" nor ".join(_BF16_FLAGS)}')
    return False, '; '.join(why)


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (see :func:`bf16_support`)."""
    return bf16_support()[0]


class Runner:
    """An exported model on the CPU, called with its inputs by name.

    ``runner(images=x)`` or ``runner({'images': x})`` runs the graph and
    returns ``{output name: ndarray}`` in :attr:`output_names` order.
    Inputs must be numpy arrays of the graph's dtypes (e.g. ``images``
    float32 ``(B, 3, H, W)``, ``image_sizes`` int64 ``(B, 2)``).

    Attributes:
        backend: ``'onnxruntime'`` or ``'openvino'``.
        precision: The precision it runs at: ``'fp32'`` or ``'bf16'``
            (``'fp32'`` after a fallback on a CPU without bf16).
        model_file: The file it runs.
        input_names, output_names: The graph's names, in graph order.
    """

    backend = ''

    def __init__(self, model_file: str, precision: str) -> None:
        self.model_file = model_file
        self.precision = precision
        self.input_names: List[str] = []
        self.output_names: List[str] = []

    def __call__(self, inputs: Optional[Mapping[str, np.ndarray]] = None,
                 **named: np.ndarray) -> Dict[str, np.ndarray]:
        feeds = dict(inputs or {}, **named)
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise ValueError(
                f'{osp.basename(self.model_file)} takes inputs '
                f'{self.input_names}; missing {missing}, unknown {extra}')
        return self._run({n: feeds[n] for n in self.input_names})

    def _run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.model_file!r}, '
                f'precision={self.precision!r}, '
                f'inputs={self.input_names}, outputs={self.output_names})')


class _OrtNamedRunner(Runner):
    backend = 'onnxruntime'

    def __init__(self, model_file: str, threads: int = 0) -> None:
        import onnxruntime as ort
        super().__init__(model_file, 'fp32')
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            model_file, options, providers=['CPUExecutionProvider'])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outputs))


class _OpenVinoNamedRunner(Runner):
    backend = 'openvino'

    def __init__(self, model_file: str, precision: str = 'fp32',
                 threads: int = 0) -> None:
        ov = import_openvino()
        super().__init__(model_file, precision)
        # Always pinned: the CPU plugin would otherwise pick bf16 by itself
        # on some processors (those with AMX).
        config = {'INFERENCE_PRECISION_HINT': _OV_PRECISION[precision]}
        if threads:
            config['INFERENCE_NUM_THREADS'] = threads
        core = ov.Core()
        with keep_signal_stack():
            self.model = core.compile_model(core.read_model(model_file),
                                            'CPU', config)
        self.input_names = [p.get_any_name() for p in self.model.inputs]
        self.output_names = [p.get_any_name() for p in self.model.outputs]
        self._request = self.model.create_infer_request()

    def _run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        results = self._request.infer(feeds)
        # Copies: the request reuses its output buffers on the next call.
        return {name: np.array(results[port])
                for name, port in zip(self.output_names, self.model.outputs)}


def make_runner(model_file: str, backend: str = 'onnxruntime',
                precision: str = 'fp32', threads: int = 0) -> Runner:
    """Open an exported model on the CPU; inputs and outputs by name.

    Args:
        model_file: An ``.onnx`` file, or (OpenVINO only) an OpenVINO
            ``.xml`` with its ``.bin`` beside it. int8 models are files like
            any other.
        backend: ``'onnxruntime'`` or ``'openvino'``.
        precision: ``'fp32'``, or ``'bf16'`` (OpenVINO only: its
            ``INFERENCE_PRECISION_HINT``). On a CPU without bf16
            (:func:`bf16_support`) bf16 falls back to fp32 with a warning
            that says why.
        threads: Intra-op threads, 0 for the runtime's default.

    Returns:
        A :class:`Runner`: ``runner(images=x, ...)`` -> ``{name: ndarray}``.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; use one of '
                         f'{", ".join(BACKENDS)}')
    if precision not in PRECISIONS:
        raise ValueError(f'unknown precision {precision!r}; use one of '
                         f'{", ".join(PRECISIONS)} (int8 is a model file: '
                         'tools/deployment/quantize.py)')
    suffixes = ('.onnx', '.xml') if backend == 'openvino' else ('.onnx', )
    if not model_file.endswith(suffixes):
        hint = (' (an OpenVINO .xml needs --backend openvino)'
                if model_file.endswith('.xml') else '')
        raise ValueError(f'{model_file}: {backend} runs '
                         f'{" or ".join(suffixes)} files{hint}')
    if not osp.isfile(model_file):
        raise FileNotFoundError(f'model file not found: {model_file}')
    if model_file.endswith('.xml'):
        weights = model_file[:-len('.xml')] + '.bin'
        if not osp.isfile(weights):
            raise FileNotFoundError(f'{model_file}: its weights {weights} '
                                    'are missing (keep the .bin beside it)')
    if backend == 'onnxruntime':
        if precision == 'bf16':
            raise ValueError(
                'bf16 needs backend=\'openvino\': ONNX Runtime\'s CPU '
                'provider runs fp32 (use precision=\'fp32\', or '
                'openvino)')
        return _OrtNamedRunner(model_file, threads)
    if precision == 'bf16':
        has_bf16, why = bf16_support()
        if not has_bf16:
            warnings.warn(f'bf16 requested, but this CPU has no bf16 '
                          f'arithmetic ({why}): running fp32', stacklevel=2)
            precision = 'fp32'
    return _OpenVinoNamedRunner(model_file, precision, threads)


class OrtRunner:
    """ONNX Runtime (CPU) session on an exported file, positional form.

    ``runner(images)`` takes ``(B, 3, H, W)`` float32 and returns the graph's
    outputs as numpy arrays, in order (see :func:`make_runner` for named
    inputs and outputs).
    """

    name = 'onnxruntime'

    def __init__(self, path: str, threads: int = 0) -> None:
        self.runner = make_runner(path, 'onnxruntime', threads=threads)
        self.session = self.runner.session

    def __call__(self, images: np.ndarray) -> List[np.ndarray]:
        return list(self.runner(images=images).values())


class OpenVinoRunner:
    """OpenVINO (CPU) on the same ONNX file, at fp32 precision, positional
    form (see :class:`OrtRunner`)."""

    name = 'openvino'

    def __init__(self, path: str, threads: int = 0) -> None:
        self.runner = make_runner(path, 'openvino', 'fp32', threads)
        self.model = self.runner.model

    def __call__(self, images: np.ndarray) -> List[np.ndarray]:
        return list(self.runner(images=images).values())


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
