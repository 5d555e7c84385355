"""Running the service's parts as local processes (a private redis-server or Redis Cluster, the
API, Prometheus, the trainer), for the demo and for the tests and benchmarks. Nothing here is
used by the serving or training code.

It ships inside the package because ``nextwatch demo`` (``make demo``) runs the whole stack on one
machine without Docker. Named for what it holds, the processes of a local run (it was
``localstack``, the name of an unrelated, well-known AWS emulator).
"""
