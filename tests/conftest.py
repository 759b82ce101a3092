"""Shared fixtures, and one fresh compile cache per test session.

The cache is made by the first process of the session (pytest itself, or
pytest-xdist's controller) and handed to xdist's workers through the environment
(they start after this file is read), so a network compiled by one worker is a
cache hit for the others; the cache's own locks make concurrent builds of one
network safe.  The process that made it removes it at exit.  A SYMNET_CACHE_DIR
set by the caller is used as it is."""

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (CI included): a failure
# is then reproducible, never a matter of which examples one run happened to draw.
settings.register_profile("symnet", derandomize=True, database=None)
settings.load_profile("symnet")

if "SYMNET_CACHE_DIR" not in os.environ:
    _CACHE = tempfile.mkdtemp(prefix="symnet-test-cache-")
    os.environ["SYMNET_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def pytest_configure(config):
    """With several xdist workers, measure the machine (symnet/backend/c/tuning.py) once here,
    before they start: on a machine still quiet, and not once per worker."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if os.environ.get("SYMNET_SANITIZE"):
        return
    from symnet.backend.c import tuning
    tuning.machine()


# ------------------------------------------------ the quick step's time
# The slowest tests of the quick step (`-m "not slow"`), by `--durations=40` on a quiet
# 2-core machine (each 5-25 s of a worker), run in the slow step instead, so that the
# README's test command stays within its 8 minutes; CI runs both steps.
SLOW_BY_TIME = frozenset("""
tests/test_attention.py::test_transformer_block_equals_pytorch
tests/test_optimizer_float32.py::test_lenet_adam_float32_drift_no_worse_than_pytorch
tests/test_correlate.py::test_a_term_of_another_form_runs_as_its_loop
tests/test_export.py::test_exported_c_computes_what_the_model_computes[sequence-float32]
tests/test_gated.py::test_num_layers_equals_pytorch[lstm]
tests/test_gated.py::test_num_layers_equals_pytorch[gru]
tests/test_examples.py::test_poisson_pinn_error
tests/test_input_derivatives.py::test_input_grad_central_differences[residual]
tests/test_bench_refs.py::test_jax_sequence_step_agrees_with_symnet[transformer]
tests/test_activation_props.py::test_composed_activation_gradients
tests/test_warnings.py::test_generated_file_has_no_warnings[gru.c]
tests/test_properties.py::test_random_networks_in_float32_agree_with_float64
tests/test_docs.py::test_page_code_runs[docs/derivatives.md]
tests/test_docs.py::test_page_code_runs[docs/sequences.md]
tests/test_conv_properties.py::test_random_1d_pools_match_the_loop_reference
tests/test_conv_properties.py::test_random_dilated_convolutions_match_the_loop_reference
tests/test_export.py::test_export_compiles_strict_c99[xor-float32]
tests/test_conv_properties.py::test_random_geometries_match_the_loop_reference
tests/test_properties.py::test_random_networks_match_finite_differences
tests/test_bench_refs.py::test_pinn_reference_agrees_with_symnet[float32-jax]
tests/test_gated.py::test_num_layers_stack_equals_numpy_loop_and_central_differences[True-lstm]
tests/test_gated.py::test_num_layers_stack_equals_numpy_loop_and_central_differences[False-lstm]
tests/test_bench_refs.py::test_pinn_reference_agrees_with_symnet[float64-jax]
tests/test_conv_properties.py::test_random_2d_padded_pools_match_the_loop_reference
tests/test_distributed.py::test_sd_equals_one_process_on_concatenated_data[2proc]
tests/test_attention.py::test_transformer_blocks_equal_numpy_and_central_differences
tests/test_conv_formulas.py::test_explicit_sympy_gradients_equal_the_compiled_ones
tests/test_pinn.py::test_residual_graph_against_torch
tests/test_cache.py::test_concurrent_builds_compile_once_and_agree
tests/test_gated.py::test_cells_in_unroll_and_stacked_layers
tests/test_gated.py::test_num_layers_stack_equals_numpy_loop_and_central_differences[False-gru]
tests/test_bench.py::test_pinn_workload_pieces
tests/test_gated.py::test_num_layers_stack_equals_numpy_loop_and_central_differences[True-gru]
tests/test_bench_refs.py::test_pinn_jax_float64_leaves_float32_alone
tests/test_properties.py::test_random_malformed_inputs_never_crash_the_process
tests/test_docs.py::test_page_code_runs[docs/layers.md]
tests/test_optimizer_float32.py::test_lenet_adam_float32_run_stays_near_its_float64_run
tests/test_shared_kernels.py::test_processes_building_at_once_compile_it_once
tests/test_input_grad_conv.py::test_reverse_equals_jets_on_a_dense_graph
tests/test_input_grad_conv.py::test_softmax_cross_entropy_input_grad_central_differences
tests/test_warnings.py::test_generated_file_has_no_warnings[transformer.c]
tests/test_cache.py::test_damage_is_rebuilt_without_loading_the_damaged_module
tests/test_build.py::test_second_process_loads_from_cache_without_compiling
tests/test_kernels.py::test_portable_build_gradients
tests/test_pinn.py::test_fit_reduces_each_method
""".split())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in SLOW_BY_TIME:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def targets_for(loss: str, rng, batch: int, n_out: int) -> np.ndarray:
    """Targets in each loss's domain: one-hot rows, (0,1) values, or reals."""
    if loss == "softmax_cross_entropy":
        return np.eye(n_out)[rng.integers(0, n_out, batch)]
    if loss == "bce":
        return rng.uniform(0.05, 0.95, (batch, n_out))
    return rng.normal(size=(batch, n_out))


# ------------------------------------------------ where the test time goes
# SYMNET_TEST_CPU=N prints the N tests that took the most CPU time (this process's
# and the C compiler's, which wall-clock durations on a busy machine do not show)
# and how many networks each compiled.
_CPU_TOP = int(os.environ.get("SYMNET_TEST_CPU", "0") or 0)
_cpu_rows: list = []


if _CPU_TOP:
    import resource
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        from symnet.backend.c import build

        def now():
            ch = resource.getrusage(resource.RUSAGE_CHILDREN)
            return time.process_time(), ch.ru_utime + ch.ru_stime, build.STATS["compiled"]
        before = now()
        yield
        after = now()
        _cpu_rows.append((after[0] - before[0], after[1] - before[1], after[2] - before[2],
                          item.nodeid))

    def pytest_terminal_summary(terminalreporter):
        own = sum(r[0] for r in _cpu_rows)
        cc = sum(r[1] for r in _cpu_rows)
        n = sum(r[2] for r in _cpu_rows)
        terminalreporter.write_line(f"CPU time: {own:.1f} s in Python, {cc:.1f} s in the C "
                                    f"compiler, {n} networks compiled, {len(_cpu_rows)} tests")
        for py, c, k, nodeid in sorted(_cpu_rows, key=lambda r: -(r[0] + r[1]))[:_CPU_TOP]:
            terminalreporter.write_line(f"{py + c:7.2f} s  (python {py:6.2f}, cc {c:6.2f}, "
                                        f"{k:3d} compiled)  {nodeid}")
