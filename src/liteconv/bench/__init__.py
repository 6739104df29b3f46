"""Host-side studies (TensorFlow for the conversions): the papers' speed tables (``layers``),
training throughput (``training``), the harness cross-check (``crosscheck``) and the
accuracy/latency report (``report``)."""
