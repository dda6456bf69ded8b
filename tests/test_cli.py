"""The `bfdkern` entry point: every command is listed with its description and parses --help; help imports
nothing heavy; output into a closed pipe ends quietly; --device and --config behave the same in every command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bfdkern import cli
from bfdkern.commands.options import GPU_DEVICE_FILES
from tests.helpers import ROOT


def test_help_lists_every_command_with_its_description(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out
        assert cli._module(name).HELP.split()[0] in out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_command_parses_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert f"bfdkern {name}" in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["frobnicate"])
    assert exit_.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_version(capsys):
    import bfdkern

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"bfdkern {bfdkern.__version__}"


# --- start-up: parsing and help import nothing heavy -------------------------------------------------------
HEAVY = ("torch", "numpy", "PIL", "sklearn", "matplotlib", "scipy", "cv2")

_HELP_PROBE = """
import json, sys
from bfdkern.cli import COMMANDS, main
found = {}
for argv in [["--help"]] + [[name, "--help"] for name in COMMANDS]:
    try:
        main(argv)
    except SystemExit:
        pass
    found[" ".join(argv)] = [m for m in HEAVY if m in sys.modules]
print(json.dumps(found))
"""


def _python(*args, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, timeout=120, **kw)


def test_help_imports_no_torch_or_numpy():
    """`bfdkern --help` and every `bfdkern COMMAND --help`, one after the other in a fresh interpreter: none
    imports torch, NumPy or another heavy package (checked after each, so the first culprit is named)."""
    proc = _python("-c", f"HEAVY = {HEAVY!r}\n" + _HELP_PROBE)
    assert proc.returncode == 0, proc.stderr.decode()
    found = json.loads(proc.stdout.decode().splitlines()[-1])
    assert set(found) == {"--help", *(f"{name} --help" for name in cli.COMMANDS)}
    assert {argv: heavy for argv, heavy in found.items() if heavy} == {}


def test_the_package_root_imports_no_torch():
    proc = _python("-c", "import sys, bfdkern, bfdkern.tasks, bfdkern.training.config; print('torch' in sys.modules)")
    assert proc.stdout.decode().strip() == "False", proc.stderr.decode()


# --- a reader that stops early (`| head`) ----------------------------------------------------------------
def _closed_stdout(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m bfdkern ARGV` writing to a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "bfdkern", *argv], env=env, stdout=write, stderr=subprocess.PIPE, timeout=timeout
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("argv", [["--help"], *([name, "--help"] for name in cli.COMMANDS)], ids=" ".join)
def test_help_into_a_closed_pipe_ends_quietly(argv):
    proc = _closed_stdout(*argv)
    assert proc.stderr.decode() == ""
    assert proc.returncode in (0, 141)  # argparse drops the help quietly; or ended as SIGPIPE would end it


def test_command_output_into_a_closed_pipe_ends_quietly():
    proc = _closed_stdout("evaluate", "--list")
    assert (proc.stderr.decode(), proc.returncode) == ("", 141)


def test_a_closed_pipe_is_no_bad_input_error(monkeypatch, capsys):
    """Inside a command, a broken pipe (an OSError) is not reported as `error: [Errno 32] Broken pipe`."""
    from bfdkern.commands.options import run_command

    def write():
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        run_command("detect", write)
    monkeypatch.setattr(cli, "_run", lambda argv: write())
    assert cli.main(["detect"]) == 141
    assert capsys.readouterr().err == ""


# --- --device: one clear line in every command that takes it ----------------------------------------------
def _device_argv(tmp: Path) -> dict[str, list[str]]:
    """The least each command with --device needs to parse (the device is checked before anything runs)."""
    d = str(tmp)
    return {
        "pretrain": ["--data", d, "--out", f"{d}/run"],
        "fit-oneclass": ["--encoder", d, "--real", d, "-o", f"{d}/d.npz"],
        "fit-binary": ["--encoder", d, "--real", d, "--fake", d, "-o", f"{d}/d.npz"],
        "fit-baseline": ["cnnd", "--real", d, "--fake", d, "-o", f"{d}/d.pt"],
        "detect": [f"{d}/x.jpg", "--detector", f"{d}/d.npz"],
        "evaluate": ["--list"],
        "ablate": ["--data", d, "--fit", d, "--real", d, "--fake", f"a={d}", "--out", f"{d}/ab"],
        "bench": ["--batch", "4"],
    }


def _takes_device(name: str) -> bool:
    parser = cli._command_parser(cli.build_parser(name), name)
    return any("--device" in a.option_strings for a in parser._actions)


def test_every_command_with_device_is_checked():
    assert {name for name in cli.COMMANDS if _takes_device(name)} == set(_device_argv(Path(".")))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("name", sorted(_device_argv(Path("."))))
def test_device_cuda_without_a_gpu_is_one_clear_line(name, tmp_path, capsys):
    assert cli.main([name, *_device_argv(tmp_path)[name], "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"bfdkern {name}: error: --device cuda: ")
    reasons = ("sees no CUDA GPU", "built without CUDA", "no GPU device is visible here")
    assert any(r in err for r in reasons) and err.endswith("; use cpu\n")
    assert list(tmp_path.iterdir()) == []  # nothing was written


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or any(os.path.exists(f) for f in GPU_DEVICE_FILES),
    reason="a GPU's device files exist here",
)
def test_device_cuda_without_gpu_device_files_fails_before_torch_is_imported(tmp_path):
    """A missing GPU is told in well under a second: without a GPU's device files, no torch."""
    code = (
        "import sys\n"
        "from bfdkern import cli\n"
        f"status = cli.main(['pretrain', '--data', {str(tmp_path)!r}, '--out', {str(tmp_path / 'run')!r}, '--device', 'cuda'])\n"
        "assert status == 2 and 'torch' not in sys.modules, (status, sorted(m for m in sys.modules if 'torch' in m)[:5])\n"
    )
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "--device cuda: no GPU device is visible here" in proc.stderr.decode()
    assert list(tmp_path.iterdir()) == []


def test_device_names_are_checked(tmp_path, capsys):
    assert cli.main(["bench", "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err == "bfdkern bench: error: --device gpu: not a device torch knows; use cpu, cuda, cuda:1, ...\n"
    if torch.cuda.device_count() < 8:
        assert cli.main(["bench", "--device", "cuda:7"]) == 2
        assert "--device cuda:7:" in capsys.readouterr().err


# --- warnings and --config ---------------------------------------------------------------------------------
def test_warnings_of_a_command_are_one_line():
    code = (
        "import sys, warnings\n"
        "from bfdkern import cli\n"
        "from bfdkern.commands import bench\n"
        "bench.run = lambda args: warnings.warn('theta+ and theta- collapse') or 0\n"
        "sys.exit(cli.main(['bench']))\n"
    )
    proc = _python("-c", code)
    assert (proc.returncode, proc.stderr.decode()) == (0, "bfdkern bench: warning: theta+ and theta- collapse\n")


def _parser_with_options():
    import argparse

    from bfdkern.commands.options import add_config_argument

    p = argparse.ArgumentParser()
    add_config_argument(p)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--mode", choices=["fd", "jvp"], default=None)
    p.add_argument("--tasks", default=None)
    p.add_argument("--quiet", action="store_true", default=None)
    return p


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_config_file_options_are_defaults_the_command_line_overrides(tmp_path, suffix):
    from bfdkern.commands.options import apply_config_file

    if suffix == ".toml":
        text = (
            'out = "runs/a"\nbatch-size = 48\nlr = 1e-5\nmode = "jvp"\ntasks = ["iso", "manipulated"]\nquiet = true\n'
        )
    else:
        pytest.importorskip("yaml")
        text = "out: runs/a\nbatch_size: 48\nlr: 1.0e-5\nmode: jvp\ntasks: [iso, manipulated]\nquiet: true\n"
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    p = _parser_with_options()
    argv = ["--config", str(path), "--lr", "3e-4"]
    assert apply_config_file(p, argv) == str(path)
    args = p.parse_args(argv)
    assert (args.out, args.batch_size, args.lr, args.mode, args.tasks, args.quiet) == (
        "runs/a",
        48,
        3e-4,  # the command line wins
        "jvp",
        "iso,manipulated",
        True,
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("batch-size = 48\nbatchsize = 2\n", "unknown option 'batchsize' \\(options: batch-size, lr, mode, out, quiet"),
        ('batch-size = "many"\n', "batch-size = 'many': expected an integer|expected a int"),
        ("batch-size = 4.5\n", "batch-size = 4.5: expected an integer"),
        ('mode = "sgd"\n', "mode = 'sgd': expected one of \\['fd', 'jvp'\\]"),
        ('quiet = "yes"\n', "quiet = 'yes': expected true or false"),
        ("lr = [1, 2]\n", "lr = .*: expected a float"),
        ("batch-size = \n", "not valid TOML"),
    ],
)
def test_bad_config_files_name_the_file_and_the_option(tmp_path, text, message):
    from bfdkern.commands.options import apply_config_file

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        apply_config_file(_parser_with_options(), ["--config", str(path)])
    assert str(info.value).startswith(str(path))


def test_config_file_errors_are_one_line_from_the_command(tmp_path, capsys):
    assert cli.main(["pretrain", "--config", str(tmp_path / "none.toml")]) == 2
    assert (
        capsys.readouterr().err
        == f"bfdkern pretrain: error: {tmp_path / 'none.toml'}: no such configuration file (--config)\n"
    )
    (tmp_path / "c.json").write_text("{}")
    assert cli.main(["pretrain", "--config", str(tmp_path / "c.json")]) == 2
    assert "a configuration file ends in .toml, .yaml or .yml" in capsys.readouterr().err
