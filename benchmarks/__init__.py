"""Performance benchmarks of openscene-ray: one harness (:mod:`benchmarks.harness`) and one module per
case (:mod:`benchmarks.fusion`, :mod:`benchmarks.pipeline`, :mod:`benchmarks.distill`), run by
``python jobs/benchmark.py fusion|distill|pipeline|all [--options]``."""
