"""Load a TFLite interpreter without importing TensorFlow unless asked to.

Order for ``runtime="auto"``: ``ai_edge_litert`` (LiteRT), then ``tflite_runtime``, then
``tf.lite`` as a last resort. Importable where only numpy and one runtime are installed
(a Raspberry Pi, a phone).

Example:
    >>> interp = load_interpreter("model.tflite", num_threads=4)
    >>> interp.allocate_tensors()
"""

from __future__ import annotations

import importlib
import os

from .errors import LiteconvError, first_line
from .flatbuf import custom_codes
from .logs import quiet_native_logs

RUNTIMES = ("litert", "tflite_runtime", "tf")
_MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tf": "tensorflow",
}
TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier at bytes 4..8


class InterpreterLoadError(LiteconvError):
    """The file is not a loadable TFLite model, or no runtime is installed."""


def _module(runtime: str):
    if runtime == "tf":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return importlib.import_module("tensorflow").lite
    return importlib.import_module(_MODULES[runtime])


def resolve_runtime(runtime: str = "auto") -> str:
    """Return the name of the runtime ``auto`` picks (or check that ``runtime`` imports)."""
    if runtime != "auto" and runtime not in RUNTIMES:
        raise LiteconvError(f"Unknown runtime {runtime!r}; choose auto, {', '.join(RUNTIMES)}")
    candidates = RUNTIMES if runtime == "auto" else (runtime,)
    for name in candidates:
        try:
            _module(name)
        except ImportError:
            continue
        return name
    hint = (
        "pip install ai-edge-litert"
        if runtime in ("auto", "litert")
        else {
            "tflite_runtime": "pip install tflite-runtime  (needs numpy<2)",
            "tf": "pip install tensorflow-cpu",
        }[runtime]
    )
    raise LiteconvError(f"No TFLite runtime {runtime!r} is installed; install one: {hint}")


_DISTRIBUTIONS = {
    "litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "tf": "tensorflow",
}


def runtime_version(runtime: str) -> str:
    """The installed version of a runtime (``auto`` resolved first), e.g. ``2.3.0``."""
    name = resolve_runtime(runtime)
    from importlib import metadata

    for dist in (_DISTRIBUTIONS[name], "tensorflow-cpu", "tf-nightly"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return str(getattr(_module(name), "__version__", "unknown"))


def check_tflite_bytes(blob: bytes, source: str) -> None:
    """Raise a one-line error unless ``blob`` looks like a TFLite flatbuffer."""
    if len(blob) < 8:
        raise InterpreterLoadError(
            f"{source}: {len(blob)} bytes, too short to be a .tflite model (truncated?)"
        )
    if blob[4:8] != TFLITE_MAGIC:
        raise InterpreterLoadError(
            f"{source}: not a TFLite model (no 'TFL3' identifier); re-export it with "
            "'liteconv export RUN_DIR'"
        )


def invoke(interp, source: str = "<model>") -> None:
    """``interp.invoke()`` with the runtime's exceptions as one-line errors."""
    try:
        interp.invoke()
    except INVOKE_ERRORS as err:
        raise invoke_failure(source, err) from None


INVOKE_ERRORS = (RuntimeError, ValueError)  # what invoke() raises for a model it cannot run


def invoke_failure(source: str, err: Exception) -> InterpreterLoadError:
    """The one-line error for an exception ``invoke()`` raised on ``source``."""
    first = first_line(err)
    return InterpreterLoadError(f"{source}: the runtime failed to run it ({first})")


def load_failure(blob: bytes, source: str, runtime: str, err: Exception) -> str:
    """The one line for a model ``runtime`` cannot load: Select-TF (Flex) ops named, with
    the fix, else the runtime's own first line."""
    flex = [code.removeprefix("Flex") for code in custom_codes(blob) if code.startswith("Flex")]
    if flex:
        return (f"{source}: uses TensorFlow (Select-TF / Flex) op(s) {', '.join(flex)}, which "
                f"the {runtime} runtime (builtin TFLite ops only, as on a board) cannot run; "
                "convert the model without SELECT_TF_OPS (replace those ops with builtin ones)")  # fmt: skip
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{source}: the {runtime} runtime cannot load it ({first})"


def load_interpreter(
    model_path: str | os.PathLike | None = None,
    *,
    model_content: bytes | None = None,
    runtime: str = "auto",
    num_threads: int | None = None,
    xnnpack: bool = True,
    probe: bool | None = None,
    source: str | None = None,
):
    """Create and allocate an interpreter for a ``.tflite`` file or bytes.

    Args:
        model_path: path of the ``.tflite`` file (or give ``model_content``).
        model_content: the model bytes.
        runtime: ``auto``, ``litert``, ``tflite_runtime`` or ``tf``.
        num_threads: CPU threads for the interpreter (``None``: runtime default).
        xnnpack: keep the default XNNPACK delegate; ``False`` uses the builtin kernels.
        probe: first load and run the model once in a child process (``device.probe``), so
            a native crash is an error, not the end of this process; default: for files
            (``model_path``), not for bytes this process made.
        source: the name errors give the model (default: its path, or ``<model bytes>``).

    Raises:
        InterpreterLoadError: missing, truncated, corrupt or non-TFLite file; one line.
    """
    if (model_path is None) == (model_content is None):
        raise ValueError("give exactly one of model_path and model_content")
    source = source or (str(model_path) if model_path is not None else "<model bytes>")
    if model_path is not None:
        try:
            with open(model_path, "rb") as fh:
                model_content = fh.read()
        except OSError as err:
            raise InterpreterLoadError(f"{source}: cannot read ({err.strerror})") from err
    check_tflite_bytes(model_content, source)
    name = resolve_runtime(runtime)
    if probe if probe is not None else model_path is not None:
        from .probe import probe_model

        probe_model(model_content, source, name)
    module = _module(name)
    kwargs = {"model_content": model_content, "num_threads": num_threads}
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = (
            module.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            if name == "tf"
            else module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    try:
        with quiet_native_logs():  # "INFO: Created TensorFlow Lite XNNPACK delegate ..."
            interp = module.Interpreter(**kwargs)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise InterpreterLoadError(load_failure(model_content, source, name, err)) from err
    interp.liteconv_runtime = name
    return interp
