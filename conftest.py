"""Root pytest hooks: plain `pytest` runs the tests; `pytest --benchmark` runs the benchmarks."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser):
    parser.addoption(
        "--benchmark",
        action="store_true",
        default=False,
        help="run the benchmark suite in benchmarks/ instead of the tests",
    )


def pytest_ignore_collect(collection_path, config):
    path = Path(collection_path).resolve()
    bench = config.getoption("--benchmark")
    if not bench and (ROOT / "benchmarks") in (path, *path.parents):
        return True
    if bench and (ROOT / "tests") in (path, *path.parents):
        return True
    return None
