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
# The slowest tests of the quick step (`-m "not slow"`), by `--durations` on a 2-core
# machine (each 3-25 s of a worker), run in the slow step instead, so that the README's
# test command stays within its 8 minutes; CI runs both steps.  Where a family of
# parametrised tests was moved, one member mostly stays in the quick step (the transformer's
# same-bits tests also run in .ci/sanitize).  The long parametrised sweeps (the NumPy
# backend, gradients, export, names and warnings over every network) keep in the quick step
# the members that cover each feature once (every activation, loss, layer kind and number
# type) and run the others in the slow step.
SLOW_BY_TIME = frozenset("""
tests/test_overwrite.py::test_attention_c_numpy_and_central_differences_agree
tests/test_tensor_chunks.py::test_a_transformer_is_planned_in_chunks
tests/test_tensor_chunks.py::test_threads_keep_their_chunks_in_rows_of_their_own
tests/test_tensor_chunks.py::test_chunks_agree_with_the_passes_as_they_were[11]
tests/test_tensor_chunks.py::test_recurrent_chunks_agree_with_the_passes_as_they_were[100-GRU]
tests/test_tuning.py::test_products_on_blas_match_numpy_reference[float64-1e-09-None]
tests/test_gated_initial.py::test_initial_state_equals_pytorch[2-gru]
tests/test_attention.py::test_forward_equals_numpy[True]
tests/test_cache.py::test_every_kind_of_damage_is_a_cache_miss[so-half]
tests/test_attention.py::test_gradients_central_differences[True]
tests/test_distributed_sync.py::test_synced_batchnorm_equals_one_process_on_the_union_batch[2proc-bn_sd]
tests/test_conv.py::test_loss_and_gradients_match_the_loop_reference[wide_channels]
tests/test_one_derivation.py::test_softmax_cross_entropy_rules_reach_the_c_the_formulas_and_the_explicit_form
tests/test_build.py::test_generated_folder_is_up_to_date
tests/test_distributed.py::test_early_stopping_weight_decay_and_clipping_as_in_one_process[2proc]
tests/test_cache.py::test_every_kind_of_damage_is_a_cache_miss[so-empty]
tests/test_distributed_sync.py::test_synced_batchnorm_equals_one_process_on_the_union_batch[2proc-bn]
tests/test_distributed_layers.py::test_dropout_masks_differ_between_processes_and_repeat_with_the_seed
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
tests/test_fuse_loops.py::test_fused_c_gives_the_same_numbers[float64]
tests/test_export.py::test_export_cross_compiles_for_cortex_m4[transformer]
tests/test_tensor_chunks.py::test_dropout_masks_do_not_depend_on_the_chunks
tests/test_export.py::test_exported_c_computes_what_the_model_computes[transformer-float32]
tests/test_imports.py::test_every_module_has_a_stage
tests/test_export.py::test_threads_export_computes_what_the_model_computes[transformer]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[transformer-float64]
tests/test_tensor_chunks.py::test_same_bits_on_one_thread_and_on_two[13]
tests/test_tensor_chunks.py::test_recurrent_chunks_agree_with_the_passes_as_they_were[100-LSTM]
tests/test_jet_blocks.py::test_results_do_not_depend_on_the_number_of_threads
tests/test_tensor_chunks.py::test_chunks_agree_with_the_passes_as_they_were[1]
tests/test_pinn.py::test_fit_continues_the_optimizer_state
tests/test_export.py::test_export_compiles_strict_c99[transformer-float64]
tests/test_attention.py::test_long_sequences_take_every_tile_of_the_products[True]
tests/test_gated_initial.py::test_initial_state_saves_and_loads[lstm]
tests/test_shared_kernels.py::test_networks_with_the_same_functions_share_one_wrapper
tests/test_tensor_chunks.py::test_chunks_agree_with_the_passes_as_they_were[24]
tests/test_split.py::test_two_parts_give_the_results_of_the_whole[conv]
tests/test_tensor_chunks.py::test_class_labels_give_the_gradients_of_one_hot_rows
tests/test_correlate.py::test_without_its_weight_term_the_correlation_computes_the_input_gradient_only
tests/test_input_derivatives.py::test_against_torch_func[one_residual]
tests/test_jet_blocks.py::test_plain_loops_equal_the_vector_tiles
tests/test_input_derivatives.py::test_float32_close_to_float64
tests/test_gated_initial.py::test_initial_state_equals_pytorch[2-lstm]
tests/test_input_derivatives.py::test_input_grad_central_differences[chain_sigmoid]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[sequence-float64]
tests/test_bench_refs.py::test_jax_sequence_step_agrees_with_symnet[gru]
tests/test_stack.py::test_gru_gates_delta_is_their_gradient_itself_and_still_stacks
tests/test_input_derivatives.py::test_hessian_vector_central_differences_of_gradient[residual]
tests/test_input_grad_conv.py::test_softmax_cross_entropy_against_torch_func
tests/test_tensor_chunks.py::test_a_recurrence_gives_the_same_bits_on_one_thread_and_on_two[LSTM]
tests/test_input_derivatives.py::test_input_grad_central_differences[chain_softplus]
tests/test_overwrite.py::test_attention_pieces_store_in_the_c
tests/test_gated.py::test_float32_trains_saves_loads_exports[lstm]
tests/test_split.py::test_parts_keep_their_names_to_themselves
tests/test_dropout.py::test_evaluation_is_the_identity_in_forward_evaluate_and_export
tests/test_tensor_chunks.py::test_recurrent_chunks_agree_with_the_passes_as_they_were[1-GRU]
tests/test_gated_initial.py::test_initial_state_equals_numpy_loop[lstm]
tests/test_bench_refs.py::test_reference_agrees_with_numpy[jax-tiny]
tests/test_formulas.py::test_sympy_gradients_equal_the_compiled_ones[softmax]
tests/test_bench_refs.py::test_pinn_reference_agrees_with_symnet[float32-torch]
tests/test_names.py::test_unusual_but_allowed_names_compute_like_default_names[names0-act_loss0]
tests/test_examples.py::test_burgers_exact_solution_and_quick_run
tests/test_pinn.py::test_progress_shows_each_term[newton_cg]
tests/test_formulas.py::test_sympy_gradients_equal_the_compiled_ones[custom_loss]
tests/test_input_grad_conv.py::test_two_heads_with_their_own_losses_central_differences
tests/test_jet_blocks.py::test_many_rows_hessian_vector_equals_the_sum_of_one_row_calls
tests/test_overwrite.py::test_gru_c_and_numpy_backends_agree_with_gates_stored
tests/test_pinn.py::test_gradient_and_hessian_vector_central_differences
tests/test_shared_kernels.py::test_damaged_driver_is_compiled_again
tests/test_input_grad_conv.py::test_several_inputs_central_differences
tests/test_backend_numpy.py::test_distributed_fit_on_the_numpy_backend_equals_the_c_one
tests/test_graph.py::test_explicit_sympy_gradients_equal_the_compiled_ones[rnn]
tests/test_tensor_chunks.py::test_recurrent_chunks_agree_with_the_passes_as_they_were[1-LSTM]
tests/test_input_derivatives.py::test_against_torch_func[one_sigmoid]
tests/test_formulas.py::test_latex_renders_line_by_line[softmax]
tests/test_stack.py::test_one_product_over_the_steps_laid_out_in_a_row[gru]
tests/test_split.py::test_a_part_that_does_not_compile_falls_back_to_the_whole
tests/test_gated_initial.py::test_gradient_through_the_initial_state[lstm]
tests/test_tensor_chunks.py::test_a_recurrence_in_three_chunks_equals_central_differences
tests/test_tuning.py::test_full_tune_compiles_the_tile_timed_fastest
tests/test_formulas.py::test_sympy_gradients_equal_the_compiled_ones[mish_bce]
tests/test_export.py::test_export_cross_compiles_for_cortex_m4[digits_conv]
tests/test_build.py::test_cc_is_respected
tests/test_input_derivatives.py::test_against_torch_func[one_tanh]
tests/test_input_derivatives.py::test_against_torch_func[one_softplus]
tests/test_attention.py::test_float32_trains_saves_loads_exports
tests/test_gated_initial.py::test_gradient_through_the_initial_state[gru]
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[0]
tests/test_names.py::test_unusual_but_allowed_names_compute_like_default_names[names1-act_loss1]
tests/test_batchnorm.py::test_export_folds_batchnorm_into_the_layer_before[conv1d-float32]
tests/test_export.py::test_cli_export_and_params_file
tests/test_pinn.py::test_ctrl_c_keeps_finite_parameters[newton_cg]
tests/test_cache.py::test_unwritable_cache_falls_back_with_a_warning[under-a-file]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[digits_conv-float32]
tests/test_export.py::test_readme_example_trains_in_c
tests/test_shared_kernels.py::test_without_the_shared_declarations_a_module_has_the_wrapper_of_its_own
tests/test_tuning.py::test_planned_product_runs_on_the_blas_and_others_do_not
tests/test_pinn.py::test_errors
tests/test_gradients.py::test_float32_agrees_with_float64[gelu]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[digits_conv-float64]
tests/test_shared_kernels.py::test_build_links_the_driver_the_source_calls
tests/test_tensor_chunks.py::test_recurrent_chunks_agree_with_the_passes_as_they_were[45-LSTM]
tests/test_graph.py::test_output_that_feeds_another_layer[bce]
tests/test_attention.py::test_forward_equals_numpy[False]
tests/test_conv_dilation.py::test_summary_counts_the_dilated_convolution_like_any_other
tests/test_softmax_xent.py::test_without_the_rewrite_float32_overflows[c]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[gelu-mse]
tests/test_jet_blocks.py::test_vector_tiles_build_without_avx
tests/test_warnings.py::test_generated_file_has_no_warnings[digits_conv.c]
tests/test_graph.py::test_tensor_merges_central_differences
tests/test_pinn.py::test_lbfgs_and_newton_cg_on_an_ordinary_network
tests/test_shared_delta.py::test_gradients_against_differences
tests/test_pool_padding.py::test_against_pytorch[1]
tests/test_gated.py::test_forward_equals_numpy_loop[True-lstm]
tests/test_bench_refs.py::test_pinn_reference_agrees_with_symnet[float64-torch]
tests/test_input_derivatives.py::test_hessian_central_differences_of_jacobian[sigmoid]
tests/test_tensor_chunks.py::test_same_bits_on_one_thread_and_on_two[40]
tests/test_tensor_chunks.py::test_training_in_chunks_reduces_the_loss
tests/test_pinn.py::test_against_torch_autograd
tests/test_pool1d.py::test_float32_agrees_and_training_reduces_the_loss
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[5]
tests/test_bench_refs.py::test_reference_agrees_with_numpy[jax-small]
tests/test_input_derivatives.py::test_jet_gradient_equals_compiled_gradient
tests/test_cache.py::test_damaged_module_is_rebuilt_in_the_same_process
tests/test_attention.py::test_long_sequences_take_every_tile_of_the_products[False]
tests/test_kernels.py::test_same_seed_same_bits_with_one_or_two_threads
tests/test_tensor_chunks.py::test_recurrent_chunks_agree_with_the_passes_as_they_were[45-GRU]
tests/test_fuse_loops.py::test_fused_c_gives_the_same_numbers[float32]
tests/test_split.py::test_two_parts_give_the_results_of_the_whole[mlp]
tests/test_gated_initial.py::test_initial_state_saves_and_loads[gru]
tests/test_export.py::test_export_compiles_strict_c99[transformer-float32]
tests/test_shared_kernels.py::test_networks_share_one_compiled_driver
tests/test_row_reciprocals.py::test_softmax_rows_multiply_by_the_reciprocal_of_their_sum
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[wide_channels]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[moons]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[two_inputs_merges]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[xor]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[rbf]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[conv1d_pools]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[two_heads]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[regression]
tests/test_backend_numpy.py::test_numpy_backend_equals_the_c_backend[max2d_k3_s2_p1]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[gelu-bce]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[swish-mse]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[relu-bce]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[elu-mse]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[softplus-bce]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[leaky_relu-mse]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[tanh-bce]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[sigmoid-softmax_cross_entropy]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[linear-bce]
tests/test_gradients.py::test_float32_agrees_with_float64[sigmoid]
tests/test_gradients.py::test_float32_agrees_with_float64[tanh]
tests/test_gradients.py::test_float32_agrees_with_float64[swish]
tests/test_export.py::test_export_compiles_strict_c99[moons-float64]
tests/test_export.py::test_export_compiles_strict_c99[xor-float64]
tests/test_export.py::test_export_compiles_strict_c99[two_heads-float64]
tests/test_export.py::test_export_compiles_strict_c99[regression-float64]
tests/test_export.py::test_export_compiles_strict_c99[rbf-float64]
tests/test_export.py::test_export_compiles_strict_c99[digits-float64]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[moons-float64]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[xor-float64]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[two_heads-float64]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[regression-float64]
tests/test_export.py::test_exported_c_computes_what_the_model_computes[rbf-float64]
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[70]
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[30]
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[60]
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[40]
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[50]
tests/test_names.py::test_names_the_c_uses_are_legal_and_compute_like_default_names[20]
tests/test_warnings.py::test_generated_file_has_no_warnings[burgers.c]
tests/test_warnings.py::test_generated_file_has_no_warnings[moons.c]
tests/test_warnings.py::test_generated_file_has_no_warnings[regression.c]
tests/test_warnings.py::test_generated_file_has_no_warnings[two_heads.c]
tests/test_pool_fused.py::test_fused_exactly_where_the_windows_tile_the_input[relu_long_rows_twice]
tests/test_pool_fused.py::test_fused_exactly_where_the_windows_tile_the_input[relu_padded]
tests/test_pool_fused.py::test_fused_exactly_where_the_windows_tile_the_input[relu_overlapping]
tests/test_export.py::test_exported_c_under_other_flags_stays_close[moons-float64]
tests/test_export.py::test_exported_c_under_other_flags_stays_close[digits-float64]
tests/test_export.py::test_exported_c_under_other_flags_stays_close[gated-float64]
tests/test_export.py::test_exported_c_under_other_flags_stays_close[rbf-float64]
tests/test_conv_io.py::test_tensor_networks_round_trip_and_train_on[conv_mix-float64]
tests/test_conv_io.py::test_tensor_networks_round_trip_and_train_on[depthwise-float64]
tests/test_conv_io.py::test_tensor_networks_round_trip_and_train_on[padded_1d-float64]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[swish-softmax_cross_entropy]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[relu-softmax_cross_entropy]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[sigmoid-bce]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[elu-bce]
tests/test_gradients.py::test_gradients_match_finite_differences_and_numpy[leaky_relu-bce]
tests/test_copies.py::test_the_same_bits_in_a_transformer[float32]
tests/test_epilogue.py::test_the_same_bits_in_a_transformer[fuse_epilogues]
tests/test_cache.py::test_unwritable_cache_falls_back_with_a_warning[read-only-dir]
tests/test_cache.py::test_unwritable_cache_falls_back_with_a_warning[file]
tests/test_position_classes.py::test_a_gru_tags_each_token_with_the_parity_so_far
tests/test_shared_kernels.py::test_a_function_the_network_does_not_define_is_a_stand_in
tests/test_tensor_chunks.py::test_a_step_with_an_infinite_gradient_leaves_the_parameters
tests/test_input_derivatives.py::test_float32_with_exp_in_the_activation[elu]
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
