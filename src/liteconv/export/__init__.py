"""Keras model → ``.tflite`` (needs TensorFlow): ``convert`` (→ bytes), ``quantize`` (QAT,
pruning, float32 copies), ``verify`` (Keras vs TFLite on the test split) and ``run_export``
(a run's ``liteconv export``). Running models is ``liteconv.device``'s job."""
