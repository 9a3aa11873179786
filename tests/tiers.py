"""Which tests are `slow`: left out of the fast tier (`scripts/test -m "not slow"`); conftest.py marks them."""

from __future__ import annotations

import inspect
import re

# A test is `slow` when it starts Ray or a launch (itself or through a fixture it uses): a Ray start and the
# trials' worker processes cost 10-100 s a test on 2 cores, which is where the full suite's time goes. The
# rule is read from the code, so a new launch test joins the slow tier without anyone remembering to mark
# it; `@pytest.mark.slow` marks anything else that is slow (e.g. the benchmarks' tiny runs).
_STARTS_RAY = re.compile(r"""(?:fer_cli|fer_cli_cmd|main|_cli|run)\(\s*\[?\s*["']launch["']|\blaunch\(|"""
                         r"""\b_launch\w*\(|LaunchOptions\(|ray\.init\(|["']ray["'],\s*["']start["']|ray_local""")


def starts_ray(func) -> bool:
    try:
        return bool(_STARTS_RAY.search(inspect.getsource(func)))
    except (OSError, TypeError):
        return False


# Besides launches, the tests that cost the most CPU time (process and children, setup to teardown) in a
# fast-tier run: at least ~10 CPU seconds each on 2 cores, long trainings, simulations of many studies, the
# stand-in rendered twice. Each module keeps faster tests in the fast tier. "FILE::FUNCTION" marks every
# parametrisation; tests/test_tiers.py checks that each entry still names a test.
SLOW_TESTS = (
    "test_precision.py::test_a_trial_records_its_precision_and_is_the_same_measured_or_cached",
    "test_stages.py::test_a_deferred_method_is_selected_only_after_its_switch",
    "test_stages.py::test_stage_2_trains_at_its_own_lr",
    "test_stages.py::test_crt_retrains_only_the_head_and_resumes_exactly_through_the_switch",
    "test_stages.py::test_lws_learns_only_per_class_scales_on_the_cosine_head",
    "test_stages.py::test_stage_1_stopping_early_still_runs_stage_2_from_its_selected_epoch",
    "data/test_synthetic.py::test_deterministic_and_seed_dependent",
    "test_distill.py::test_a_distilled_student_follows_its_teacher",
    "test_train.py::test_same_seed_same_metrics_other_seed_differs",
    "test_train.py::test_reports_every_epoch_and_resumes_exactly_from_a_checkpoint",
    "test_train.py::test_every_loss_trains_with_mixup_soft_targets",
    "test_train.py::test_every_data_sampler_trains",
    "test_train.py::test_pretrained_file_regime_trains_and_says_what_it_loaded",
    "test_cli.py::test_train_prints_per_class_table_and_test_metrics",
    "test_cli.py::test_data_synth_then_inspect_reports_quirks",
    "report/test_stats_simulation.py::test_null_family_wise_error_and_planted_coverage_in_every_regime",
    "report/test_stats_simulation.py::test_each_guarded_part_removed_fails_plainly",
    "report/test_sequential_simulation.py::test_the_global_null_keeps_the_family_wise_error_across_looks_and_rows",
    "report/test_sequential_simulation.py::test_a_third_of_the_rows_with_an_effect_keep_their_power_on_far_fewer_trainings",
    "report/test_effects.py::test_effect_intervals_cover_the_true_main_effect_and_interaction_on_simulated_grids",
    "study/test_result.py::test_per_au_metrics_and_thresholds_are_stored_with_a_trial",
    "study/test_cams.py::test_maps_per_class_at_the_selected_epoch",
    "study/test_cams.py::test_uploaded_like_the_confusion_matrix_and_read_back_by_the_report",
    "study/test_cams.py::test_the_dashboards_trial_page_lists_the_grids",
    "test_finetune.py::test_ema_resumes_exactly_and_restarts_in_stage2_from_stage1s_selected_weights",
    "test_finetune.py::test_layer_decay_scales_the_lr_down_with_depth_heads_at_full_lr",
    "test_finetune.py::test_ema_is_the_evaluated_model_and_the_average_of_the_raw_weights",
    "test_finetune.py::test_drop_path_reaches_timms_blocks_and_changes_training",
    "test_finetune.py::test_grad_accum_steps_on_the_gradient_of_the_whole_effective_batch",
    "test_posthoc.py::test_the_trainer_reports_every_correction_and_a_study_can_make_one_its_output",
    "test_tta.py::test_train_reports_tta_beside_unchanged_plain_metrics",
    "test_bad_input.py::test_bad_data_stops_the_launch_with_one_line_and_stores_nothing",
    "test_bad_input.py::test_a_storage_that_cannot_be_written_stops_the_launch_with_one_line",
    "test_train.py::test_bf16_opt_in_on_cpu_is_deterministic_and_really_bf16",
    "test_train.py::test_the_epoch_is_selected_by_the_studys_objective_on_validation",
    "test_train.py::test_early_stopping_on_validation_macro_f1",
    "test_train.py::test_test_split_is_evaluated_once_at_the_selected_epoch",
    "test_train.py::test_au_head_loss_only_when_weighted",
    "test_train.py::test_held_out_logits_are_float32_and_give_the_stored_probabilities",
    "test_train.py::test_au_metrics_per_au_with_thresholds_chosen_on_validation",
    "test_distill.py::test_teacher_keys_are_validated",
    "test_heads.py::test_the_prior_trains_only_the_attention_head",
    "test_heads.py::test_a_trial_without_au_supervision_leaves_the_au_head_as_initialised",
    "test_finetune.py::test_each_policy_trains_one_epoch_on_what_it_changed",
)


def listed_slow(nodeid: str) -> bool:
    test = nodeid.removeprefix("tests/").split("[", 1)[0]
    return test in SLOW_TESTS


