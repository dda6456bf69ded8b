"""The README's Python example runs as written (with a small collection, image size and backbone)."""

import re
from pathlib import Path

import pytest

from bfdkern.data.simulator import simulate_collection
from tests.helpers import one_thread

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_bilevel_training_example_runs(tmp_path, capsys):
    (example,) = [b for b in python_blocks() if "BilevelTrainer" in b]
    settings = 'PHOTOS, SIZE, BACKBONE, BATCH, STEPS = "photos/", 224, "resnet50", 48, 1000'
    assert settings in example, "the README example's settings line changed; update this test"
    photos = tmp_path / "photos"
    simulate_collection(photos, 16, seed=0, size=32)
    small = f'PHOTOS, SIZE, BACKBONE, BATCH, STEPS = "{photos}", 32, "small", 8, 2'
    with one_thread():
        exec(compile(example.replace(settings, small), str(README), "exec"), {})
    printed = capsys.readouterr().out
    lambdas = eval(printed.strip().splitlines()[-1])  # the example's last line prints {task: lambda}
    assert set(lambdas) >= {"iso", "make", "manipulated", "region"} and len(lambdas) == 11
    assert all(isinstance(w, float) for w in lambdas.values())


@pytest.mark.parametrize("block", range(len(python_blocks())))
def test_every_python_block_compiles(block):
    compile(python_blocks()[block], str(README), "exec")
