"""liteconv: lightweight convolutions from Keras training to measured TFLite deployment.

The package root imports nothing heavy: TensorFlow is loaded only by the modules that
need it (``liteconv.compat`` and what imports it), so the benchmark side runs on a
device that has only numpy and the LiteRT runtime.
"""

__version__ = "0.1.0"
