"""Micro-benchmarks of workflows_app (SPEC section 11): ``manage.py workflows bench``.

- :mod:`.workloads`: the workloads and their checks;
- :mod:`.runner`: :func:`~.runner.run_benchmarks`, which times them and returns a
  JSON-ready report;
- :mod:`.background`: the ``background`` workload, timed through a django-q2 cluster
  (:mod:`.worker` is that cluster's entry point, run before Django is set up, which is
  why this package imports nothing itself);
- :mod:`.concurrency`: ``--concurrency N``, N runner processes at once.
"""
