"""Microcontrollers: does an int8 ``.tflite`` fit and run under TensorFlow Lite Micro?

``boards`` loads the MCU boards (``liteconv/configs/mcu/*.yaml``: core, clock, flash, RAM
and their sources); ``fit`` answers with TFLM's own interpreter (PyPI's ``tflite-micro``,
x86-64, reference kernels): operator coverage, the smallest arena that allocates, flash,
and TFLM's int8 outputs against LiteRT's; ``emit`` writes the model as a C array and a
minimal TFLM application. No TensorFlow.
"""
