"""What runs on the board: numpy and a LiteRT runtime only, never TensorFlow.

``runtime`` loads an interpreter, ``graph`` walks a model's operators, ``tensors``
(de)quantizes, ``harness`` is the latency/memory benchmark, ``check`` the bundle's
self-check, ``targets`` the deployment targets, ``schema`` the typed-section checker,
``files`` the atomic writers, ``machine`` and ``tables`` describe and print. The device
bundle ships this package whole; ``python -m liteconv.device`` is its command line. A test
imports every module here with TensorFlow and Keras blocked.
"""
