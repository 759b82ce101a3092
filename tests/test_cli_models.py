"""The command line on saved models (formulas, c, summary of a .npz), its help, and
``summary()`` returning the table, shown once by a prompt or by print."""

import argparse

import numpy as np
import pytest

import symnet as sn
from symnet.__main__ import c_source, main, parser
from symnet.read.summary import Summary, summarize


def _net():
    return sn.Network(sn.Input((1, 8, 8), name="I"), sn.Conv2d(2, 3, name="conv1"),
                      sn.MaxPool2d(2), sn.Flatten(), sn.Dense(3, name="O"), loss="mse")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "conv.npz"
    _net().compile(dtype="float64").save(path)
    return str(path)


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_formulas_of_a_saved_model(capsys, saved):
    rc, out, err = _run(capsys, "formulas", saved)
    assert rc == 0 and err == ""
    assert out == str(_net().formulas()) + "\n"
    rc, out, _ = _run(capsys, "formulas", saved, "--latex")
    assert rc == 0 and out == _net().formulas().latex() + "\n"


def test_c_of_a_saved_model(capsys, saved):
    rc, out, _ = _run(capsys, "c", saved, "--dtype", "float64")
    assert rc == 0 and out == c_source(_net(), "float64")


def test_summary_of_a_saved_model_and_of_a_python_file(capsys, saved, tmp_path):
    rc, out, _ = _run(capsys, "summary", saved, "--batch-size", "4")
    assert rc == 0 and out == str(summarize(_net(), 4, "float32")) + "\n"
    script = tmp_path / "net.py"
    script.write_text("import symnet as sn\n"
                      "net = sn.Network(sn.Input(3), sn.Dense(4, 'relu'), sn.Dense(2), "
                      "loss='mse')\n")
    rc, out, _ = _run(capsys, "summary", str(script), "--dtype", "float64")
    assert rc == 0 and "float64" in out and "total" in out
    assert out.splitlines()[-3].split()[1] == "26"          # the params column's total


def test_a_file_that_is_no_model_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    rc, out, err = _run(capsys, "formulas", str(bad))
    assert rc == 2 and out == ""
    assert err.startswith("python -m symnet: error: ") and "not a readable symnet model" in err
    assert len(err.strip().splitlines()) == 1
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    rc, _, err = _run(capsys, "summary", str(tmp_path / "other.npz"))
    assert rc == 2 and "not a symnet model file" in err


def test_help_says_what_running_a_python_file_does(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "summary FILE" in out and ".npz" in out
    assert '__name__ == "__main__"' in out and "training included" in out


def test_summary_shows_itself_once(capsys):
    """summary() prints nothing itself: a prompt shows its repr, print its str, both the
    table, so that ``print(net.summary())`` prints the table once."""
    net = sn.Network(sn.Input(3), sn.Dense(4, "relu"), sn.Dense(2), loss="mse")
    s = net.summary(batch_size=10)
    assert isinstance(s, Summary) and capsys.readouterr().out == ""
    assert s.total("params") == 26 and repr(s) == str(s)
    print(net.summary(batch_size=10))
    printed = capsys.readouterr().out
    assert printed == str(s) + "\n" and printed.count("batch size 10") == 1
    lines = []
    net.summary(print_fn=lines.append)
    assert lines == [str(summarize(net, 32, "float32"))]
    assert capsys.readouterr().out == ""
    m = net.compile(dtype="float64")
    print(m.summary(batch_size=10))
    printed = capsys.readouterr().out
    assert printed.count("float64") == 1 and printed.startswith("batch size 10, float64")


def test_export_refuses_what_is_no_model_in_one_line(capsys, saved, tmp_path):
    """A file that is no saved model, a folder, or --out naming a file: one line on
    stderr naming it, exit status 2, nothing written."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    taken = tmp_path / "taken"
    taken.write_text("")
    cases = [(["export", str(bad)], "bad.npz is not a readable symnet model"),
             (["export", str(tmp_path / "other.npz")], "other.npz is not a symnet model file"),
             (["export", str(tmp_path)], "is not a readable symnet model"),
             (["export", saved, "--out", str(taken)], f"--out {taken} is a file"),
             (["export", saved, "--name", "1net", "--out", str(tmp_path / "o")],
              "export name must be a C identifier")]
    for argv, message in cases:
        rc, out, err = _run(capsys, *argv)
        assert rc == 2 and out == "", argv
        assert err.startswith("python -m symnet: error: ") and message in err, argv
        assert len(err.strip().splitlines()) == 1, argv
    assert taken.read_text() == "" and not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["formulas", "c", "summary"])
def test_a_folder_given_as_the_file_is_one_line(capsys, tmp_path, command):
    rc, out, err = _run(capsys, command, str(tmp_path))
    assert rc == 2 and out == ""
    assert err == f"python -m symnet: error: {tmp_path} is a directory, not a saved model " \
                  "(.npz) or a Python file\n"


@pytest.mark.parametrize("command", ["formulas", "c", "summary"])
def test_a_file_that_is_no_model_nor_python_is_one_line(capsys, tmp_path, command):
    """A text file was run as Python: the traceback of its NameError or SyntaxError,
    exit status 1."""
    notes = tmp_path / "notes.txt"
    notes.write_text("a network of two layers\n")
    rc, out, err = _run(capsys, command, str(notes))
    assert rc == 2 and out == ""
    assert err == f"python -m symnet: error: {notes} is not a saved model (.npz) or a " \
                  "Python file (.py)\n"


def test_a_python_file_without_one_network_is_one_line(capsys, tmp_path):
    """No network, two, or a network() that returns something else: the usual one-line
    error and exit status 2, naming the file and what it holds."""
    layers = "sn.Input(2), sn.Dense(1), loss='mse'"
    cases = {"none.py": ("x = 1\n", "(found 0 Network objects at module level)"),
             "two.py": (f"import symnet as sn\na = sn.Network({layers})\n"
                        f"b = sn.Network({layers})\n",
                        "(found 2 Network objects at module level)"),
             "int.py": ("def network():\n    return 3\n",
                        "network() returned int 3, expected a symnet.Network")}
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        rc, out, err = _run(capsys, "summary", str(tmp_path / name))
        assert rc == 2 and out == "", name
        assert err.startswith(f"python -m symnet: error: {tmp_path / name}: "), name
        assert message in err and len(err.strip().splitlines()) == 1, name


@pytest.mark.parametrize("bad", ["0", "-3", "abc"])
def test_summary_refuses_a_batch_size_before_running_the_file(capsys, tmp_path, bad):
    marker = tmp_path / "ran"
    script = tmp_path / "net.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n"
                      "import symnet as sn\n"
                      "net = sn.Network(sn.Input(3), sn.Dense(2), loss='mse')\n")
    with pytest.raises(SystemExit) as exc:
        main(["summary", str(script), "--batch-size", bad])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and out == "" and not marker.exists()
    assert err.splitlines()[0].startswith("usage: python -m symnet summary ")
    assert err.splitlines()[-1] == ("python -m symnet summary: error: argument --batch-size: "
                                    f"expected a positive integer, got '{bad}'")


def test_every_option_of_every_command_has_help():
    commands = next(a for a in parser()._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"formulas", "c", "summary", "generate", "export"}
    for name, sub in commands.items():
        for action in sub._actions:
            assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest}"
