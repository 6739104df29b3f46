"""Latency on a target, the product side (TensorFlow for the conversions): per-block
profiles timed here or estimated on an emulated core (``profile``), the plan that meets a
latency budget (``budget``), ``liteconv flatten`` (``flatten_run``), the accuracy / latency
/ size report (``report``) and the harness cross-check (``crosscheck``). The papers'
tables are in ``liteconv.studies``, which nothing here imports."""
