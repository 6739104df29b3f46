"""Model → .tflite → verified → measured. ``runtime``, ``bench`` and ``bundle`` import no
TensorFlow; ``convert`` and ``verify`` do."""
