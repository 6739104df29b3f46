"""The studies behind the result tables (``liteconv study ...``, ``make bench-*``): the
papers' speed claims (``layers``), training throughput (``training``), decompose-then-fine-tune
variants (``flatten_study``, with the ResNet parent of ``resnet_parent``), the emulation's
validation on published board latencies (``emulation``, ``published_latency.csv``) and the
microcontroller sweep (``mcu_study``). Above the product: they import it, it never imports
them (``tests/test_layout.py``)."""
