"""First contact with the ``neurodyn`` command: --version, a fast --help, one summary-line order."""

import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pytest

import neurodyn
from neurodyn.cli.main import build_parser, main, package_version
from neurodyn.data.seed_format import read_dataset

HEAVY_MODULES = ("torch", "numpy", "h5py", "scipy", "sklearn", "matplotlib", "pandas", "pynwb", "ray")


def test_building_the_parser_imports_no_heavy_module():
    code = ("import sys, neurodyn.cli.main as m; m.build_parser(); "
            f"print(','.join(name for name in {HEAVY_MODULES!r} if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "", f"imported at parser build time: {done.stdout.strip()}"


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    try:
        expected = version("neurodyn")
    except PackageNotFoundError:
        expected = neurodyn.__version__
    assert capsys.readouterr().out.strip() == f"neurodyn {expected}" == f"neurodyn {package_version()}"


def test_every_command_and_flag_has_help_text():
    import argparse

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    assert helps.get(name), f"'{' '.join(path + [name])}' has no help text"
                    yield from walk(sub, path + [name])
            elif action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
                yield " ".join(path), action

    missing = [f"{where} {'/'.join(action.option_strings) or action.dest}"
               for where, action in walk(build_parser(), ["neurodyn"]) if not action.help]
    assert not missing, f"arguments without help text: {missing}"


def test_summary_lines_give_trials_then_bins_then_neurons(tmp_path, capsys):
    out = tmp_path / "small_data.h5"
    assert main(["synth", "lorenz-spikes", str(out), "--conditions", "2", "--trials-per-condition", "3",
                 "--bins", "7", "--neurons", "5"]) == 0
    line = capsys.readouterr().out
    dataset = read_dataset(out)
    assert dataset.data.shape == (6, 7, 5)
    positions = [line.index(text) for text in ("6 trials", "7 bins", "5 neurons")]
    assert positions == sorted(positions), line
    assert np.isfinite(dataset.data).all()


def test_a_warning_during_a_command_is_one_neurodyn_line(monkeypatch, capsys):
    import argparse
    import warnings

    from neurodyn.cli import main as cli

    def command(args):
        warnings.warn("3 observed value(s) within 1e-06 of zero are taken as zeros", UserWarning)
        return 0

    def parser():
        built = argparse.ArgumentParser(prog="neurodyn")
        built.set_defaults(func=command)
        return built

    monkeypatch.setattr(cli, "build_parser", parser)
    monkeypatch.setattr(cli, "refuse_existing_output", lambda args: None)
    assert cli.main([]) == 0
    err = capsys.readouterr().err
    assert err == "neurodyn: warning: 3 observed value(s) within 1e-06 of zero are taken as zeros\n"
    assert warnings.showwarning is not cli._show_warning  # restored after the command


def test_the_command_line_lets_idle_openmp_threads_sleep_unless_the_user_chose(monkeypatch, tmp_path):
    import os

    from neurodyn.cli.main import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["synth", "lorenz-spikes", str(tmp_path / "a.h5"), "--neurons", "3", "--conditions", "1",
                 "--trials-per-condition", "2", "--bins", "5"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["synth", "lorenz-spikes", str(tmp_path / "b.h5"), "--neurons", "3", "--conditions", "1",
                 "--trials-per-condition", "2", "--bins", "5"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
