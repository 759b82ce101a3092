"""`python -m symnet.bench` runs and prints its table (timings are never asserted)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "symnet.bench", *args], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_quick_bench_prints_table():
    proc = _bench("--quick", "--workloads", "tiny", "--refs", "numpy", "--sections", "steps")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "float32 peak measured now" in out
    header = next(line for line in out.splitlines() if line.startswith("workload"))
    for column in ("symnet step", "epoch/step", "numpy", "speed-up", "GFLOP/s", "% peak"):
        assert column in header
    row = next(line for line in out.splitlines() if line.startswith("tiny "))
    assert row.split()[-1].endswith("%") and row.split()[-2] != "n/a"
    assert "tiny: whole" in out


@pytest.mark.slow
def test_time_option_sets_the_calls_of_each_turn():
    proc = _bench("--quick", "--time", "0.7", "--workloads", "tiny", "--refs", "numpy",
                  "--sections", "steps")
    assert proc.returncode == 0, proc.stderr
    assert "each ≥ 100 ms of calls" in proc.stdout      # 0.7 s over 7 turns
    assert any(line.startswith("tiny ") for line in proc.stdout.splitlines())


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "601"])
def test_bench_rejects_a_time_that_is_not_seconds(bad):
    proc = _bench("--time", bad, "--workloads", "tiny")
    assert proc.returncode == 2
    assert "--time: expected seconds in (0, 600]" in proc.stderr


def test_bench_rejects_unknown_workload():
    proc = _bench("--workloads", "huge")
    assert proc.returncode == 2
    assert "unknown workload 'huge'" in proc.stderr


@pytest.mark.parametrize("option, value, message", [
    ("--sections", "stesp", "unknown section 'stesp'"),
    ("--refs", "toch", "unknown reference 'toch'")])
def test_bench_of_the_pinn_alone_rejects_unknown_sections_and_references(option, value,
                                                                         message):
    proc = _bench("--workloads", "pinn", option, value)
    assert proc.returncode == 2 and proc.stdout == ""
    assert message in proc.stderr


@pytest.mark.slow
def test_mpi_section_prints_one_and_two_processes():
    """The data-parallel section (tests/test_distributed.py says when MPI must be there)."""
    try:
        import mpi4py  # noqa: F401
        from symnet.runtime.distributed import mpiexec
        mpiexec(1)
    except (ImportError, FileNotFoundError) as exc:
        if os.environ.get("SYMNET_REQUIRE_MPI") == "1":
            pytest.fail(f"MPI required but unavailable: {exc}")
        pytest.skip(f"no MPI here: {exc}")
    proc = _bench("--quick", "--workloads", "tiny", "--sections", "mpi")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()
            if line.strip().startswith("tiny ")]
    assert [r[2] for r in rows] == ["1", "2"]                      # P
    for r in rows:
        assert float(r[4]) > 0 and float(r[5]) > 0 and r[6].endswith("%")


def test_pinn_workload_pieces():
    """The PINN workload's parts, small: the symnet step trains the Burgers network, and
    the compile time of a 3-layer order-1 network is measured in a new process."""
    import numpy as np
    from symnet.bench import pinn
    net = pinn.network(layers=3, order=4)
    assert sorted(t.name for t in net.terms) == ["data", "pde"]
    model = net.compile(dtype="float64")
    X_f, X_u, T_u = pinn._data()
    h = model.fit({"pde": X_f[:200], "data": (X_u, T_u)}, method="sd", optimizer="adam",
                  lr=1e-2, epochs=5)
    assert np.isfinite(h.loss).all() and h.loss[-1] < h.loss[0]
    wall, cpu = pinn.compile_time(3, 1)
    assert wall > 0 and cpu > 0


@pytest.mark.parametrize("text, mode", [("always [madvise] never\n", "madvise"),
                                        ("[always] madvise never\n", "always"),
                                        ("always madvise [never]\n", "never")])
def test_huge_pages_reads_the_kernels_mode(tmp_path, text, mode):
    from symnet.bench.__main__ import huge_pages
    f = tmp_path / "enabled"
    f.write_text(text)
    assert huge_pages(str(f)) == mode
    assert huge_pages(str(tmp_path / "absent")) is None


def test_isa_avx2_holds_every_library_and_keeps_other_xla_flags():
    from symnet.bench import isa
    env = isa.held_env("avx2", {"XLA_FLAGS": "--xla_cpu_max_isa=AVX512 --xla_dump_to=/tmp/x",
                                "PATH": "/bin"})
    assert env["SYMNET_MARCH"] == "x86-64-v3" and env["OPENBLAS_CORETYPE"] == "Haswell"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env[isa.MARK] == "avx2"
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_cpu_max_isa=AVX2"
    assert env["PATH"] == "/bin"
    assert isa.check("avx2", {"avx2", "fma", "sse2"}) is None
    assert isa.check("avx2", {"avx", "sse2"}) == "--isa avx2: this CPU lacks avx2, fma"
    assert "does not list" in isa.check("avx2", None)


def test_isa_held_run_marks_a_reference_whose_product_outruns_the_cap(monkeypatch):
    """A held run times each reference's own product: one well above numpy's OpenBLAS
    held to the same instruction set (XLA's YNNPACK ignores --xla_cpu_max_isa) is
    marked as not held wherever its figures are printed; outside a held run nothing
    is timed."""
    from symnet.bench import isa
    assert isa.unheld({"torch": 219.0, "jax": 401.0, "pytensor": None}, 218.0) == \
        {"jax": 401.0 / 218.0}
    assert isa.unheld({"jax": 1.25 * 200.0}, 200.0) == {}      # at the bound: held
    assert isa.unheld({"jax": 1.26 * 200.0}, 200.0) == {"jax": 1.26}
    asked = []

    def fake(name, seconds):
        asked.append(name)
        return {"torch": 219.0, "jax": 401.0}[name]

    monkeypatch.delenv(isa.MARK, raising=False)
    assert isa.check_held(["numpy", "torch", "jax"], 218.0, 0.1, measure=fake) == []
    assert asked == [] and isa.held_note("jax") == ""
    monkeypatch.setenv(isa.MARK, "avx2")
    lines = isa.check_held(["numpy", "torch", "jax"], 218.0, 0.1, measure=fake)
    assert asked == ["torch", "jax"]
    assert lines[0].endswith("numpy 218, torch 219, jax 401 GFLOP/s")
    assert len(lines) == 2 and "jax: 1.84x" in lines[1] and "NOT held" in lines[1]
    assert "YNNPACK" in lines[1]
    assert isa.held_note("jax") == " (jax not held to AVX2: see the header)"
    assert isa.held_note("torch") == ""
    assert isa.check_held(["numpy"], 218.0, 0.1, measure=fake) == []   # nothing to check
    assert isa.not_held == {}


def test_isa_avx2_is_refused_where_the_cpu_lacks_it(tmp_path):
    from symnet.bench import isa
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx\n")
    assert isa.cpu_flags(str(info)) == {"fpu", "sse2", "avx"}
    assert isa.cpu_flags(str(tmp_path / "none")) is None


@pytest.mark.slow
def test_isa_avx2_runs_the_bench_again_held_to_avx2():
    from symnet.bench import isa
    proc = _bench("--isa", "avx2", "--quick", "--workloads", "tiny", "--refs", "numpy",
                  "--sections", "steps")
    why = isa.check("avx2", isa.cpu_flags())
    if why:
        assert proc.returncode == 2 and why in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert "held to AVX2 (--isa avx2: SYMNET_MARCH=x86-64-v3" in proc.stdout
    assert any(line.startswith("tiny ") for line in proc.stdout.splitlines())
    plain = _bench("--quick", "--workloads", "tiny", "--refs", "numpy", "--sections", "steps")
    assert plain.returncode == 0 and "held to" not in plain.stdout


def test_paired_builds_differ_by_the_rewrite_alone(capsys):
    """symnet.bench.paired: the second build is the network without the rewrite (its own
    cache folder: the index would give it the first's module), timed in turns with the
    first; a rewrite that changes nothing in a network is refused, not timed."""
    from symnet.bench import paired
    make, init, data, lr = paired._workload("small", "float32")
    a, b = paired.compile_pair(make, "float32", without="fuse_epilogues")
    calls = "    sn_mm_nt_e("
    assert calls in a.c_source and calls not in b.c_source
    for m in (a, b):
        m.params.update(init(m))
    r = paired.paired(a, b, data, lr, rounds=3, steps=1)
    assert r["a_ms"] > 0 and r["b_ms"] > 0 and r["q25"] <= r["ratio"] <= r["q75"]
    before = os.environ.get("SYMNET_BLAS_CHECK")
    assert paired.main(["--without", "fuse_epilogues", "--workloads", "small",
                        "--rounds", "2", "--steps", "1", "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "without fuse_epilogues (B)" in out and "small" in out and "B/A: median" in out
    # the BLAS check off for the pair (unless asked for), the environment as it was after
    assert os.environ.get("SYMNET_BLAS_CHECK") == before
    from symnet.backend.c.build import env_switch
    assert ("BLAS check off" in out) == (before is None
                                         or not env_switch("SYMNET_BLAS_CHECK", True))
    with pytest.raises(SystemExit, match="the same C"):   # tiny: tanh and sigmoid layers
        paired.main(["--without", "fuse_epilogues", "--workloads", "tiny", "--rounds", "1",
                     "--processes", "1"])


@pytest.mark.parametrize("args,message", [
    (["--chunk", "0"], "--chunk: expected a number of examples ≥ 1, got 0"),
    (["--without", "fuse_epilogues", "--processes", "0"], "--processes: expected ≥ 1, got 0"),
    (["--without", "fuse_epilogues", "--workloads", "nope", "--processes", "1"],
     "unknown workload 'nope'"),
    (["--without", "nothing"], "invalid choice: 'nothing'"),
])
def test_paired_refuses_bad_arguments(args, message, capsys):
    from symnet.bench import paired
    with pytest.raises(SystemExit) as exc:
        paired.main(args)
    assert message in str(exc.value) + capsys.readouterr().err
