"""Operator tools built on the public API: the ``eagle`` command line
(:mod:`eagle.ops.cli`), the demo (:mod:`eagle.ops.demo`), Prometheus metrics
(:mod:`eagle.ops.metrics`) and TLS helpers for the CLI (:mod:`eagle.ops.tls`)."""
