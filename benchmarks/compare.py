"""Flag regressions against a saved baseline: ``python benchmarks/compare.py BASE.json NEW.json``.

Works on pytest-benchmark JSON (``--benchmark-json``) and ``edgemed bench --save`` results; exit
code 1 when a figure grew by more than ``--threshold`` percent (default 10). The logic lives in
``edgemed.bench.compare``. For the pytest suites, pytest-benchmark's own
``--benchmark-compare --benchmark-compare-fail=median:10%`` does the same against saved runs.
"""

from edgemed.bench.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
