"""Benchmarks of medic_viz: experiments of the library, each a declaration (which attacks,
methods, settings and seeds) plus its report. Run them from the repository root as modules::

    python -m benchmarks.bench_medic_default --part demo
    python -m benchmarks.table1_report --check

They import only :mod:`medic_viz` and :mod:`benchmarks.common` (paths, the teacher cache, the
Table-1 declarations that two scripts share); no script imports another. Teachers, their
attack settings and resumption come from :mod:`medic_viz.experiments`.
"""
