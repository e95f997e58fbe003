"""eagle's benchmark suite: every claim measured against grpcio under real faults.

Run it with ``python -m benchmarks`` (``make bench``) or ``python -m benchmarks --quick``
(``make bench-quick``); ``python -m benchmarks --help`` lists the flags. Results go to
``benchmarks/results/<timestamp>/`` (JSON, a Markdown report and PNG plots); a full run
also refreshes ``benchmarks/results/latest/``.

Every client runs in its own subprocess (:mod:`benchmarks.worker`) so its CPU time and
peak RSS are its own; every server is a real process on 127.0.0.1 started by
:class:`eagle.testing.cluster.LocalCluster` or :class:`eagle.testing.etcd.EtcdCluster`.
"""
