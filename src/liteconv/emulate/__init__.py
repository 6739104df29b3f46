"""Board-free latency estimates: a target core's instructions and cycles, emulated.

``tools`` finds (or installs, as root with apt) the dynamic ``qemu-aarch64`` and LLVM 16's
``llvm-mc``/``llvm-mca``, and builds the counting plugin (``count.c``) with the system
compiler; ``counts`` runs ``.tflite`` models in the emulated arm64 user space of
``bench-arm64`` under the target core's ``-cpu`` model (XNNPACK picks that core's kernels)
and counts the instructions of the timed invokes per translation block; ``cycles`` turns
the hot blocks into cycles with llvm-mca's scheduling model of the core; ``estimate``
puts it together per model and target, cached by model hash. Deterministic: the same
model, runtime and target give the same count on any host. No TensorFlow.
"""
