"""Assemble BENCHMARKS.md from the per-benchmark results in bench/results/*.md.

Each bench script writes its own results file (machine, command, medians); this keeps BENCHMARKS.md
a faithful copy of what the scripts printed. Usage: ``python bench/make_benchmarks_md.py``.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "data_prep",
    "classifier",
    "step5_demo",
    "classifier_ladder_reading",
    "classifier_ladder",
    "classifier_ladder_compare_min_steps_per_epoch-50",
    "ladder_headroom",
    "ladder_headroom_lookbacks-32-60",
    "classifier_ladder_bars-40000_rows-echo",
    "classifier_ladder_lookback-60_rows-echo",
    "classifier_ladder_confirm_lookback-60_rows-echo_blip-echo_ar-vol_echo",
    "classifier_ladder_bars-40000_lookback-60_rows-echo",
    "classifier_ladder_confirm_bars-40000_lookback-60_rows-echo_blip-echo_ar-vol_echo",
    "classifier_ladder_bars-40000_lookback-60_rows-momentum-vol_trend-noise-EURUSD-GOOG",
    "classifier_ladder_confirm_bars-40000_lookback-60_rows-regime-mean_reversion-momentum-vol_trend-"
    "bundled",
    "classifier_ladder_confirm_bars-40000_rows-echo_blip-echo_ar-vol_echo",
    "classifier_ladder_ensembles_rows-echo_blip",
    "classifier_ladder_confirm",
    "lightgbm",
    "classifier_ladder_compare_confirm_min_steps_per_epoch-50",
    "step5_demo_min_steps_per_epoch",
    "classifier_ladder_uncut_batch",
    "classifier_ladder_confirm_trainingmin_steps_per_epoch-1",
    "classifier_ladder_ensembles",
    "classifier_ladder_confirm_ensembles",
    "classifier_ladder_plain_max",
    "classifier_ladder_ensembles_stacking",
    "classifier_ladder_ensembles_rows-echo-vol_echo",
    "classifier_ladder_compare_lr_schedule-warmup_cosine",
    "classifier_ladder_compare_trainingweight_decay-00001",
    "classifier_ladder_compare_trainingweight_decay-001",
    "classifier_ladder_compare_trainingnetwork_features-ret_1,hl_range,body,upper_wick,"
    "lower_wick,volume_ratio_24",
    "sequence_probe",
    "classifier_ladder_bars-40000_rows-vol_echo-echo",
    "classifier_ladder_bars-40000_trainingnetwork_features-ret_1,hl_range,body,upper_wick,"
    "lower_wick,volume_ratio_24_rows-vol_echo-echo",
    "classifier_ladder_trainingnetwork_wide-true_trainingnetwork_features-ret_1,hl_range,body,"
    "upper_wick,lower_wick,volume_ratio_24",
    "classifier_ladder_compare_trainingnetwork_wide-true_trainingnetwork_features-ret_1,hl_range,"
    "body,upper_wick,lower_wick,volume_ratio_24",
    "classifier_ladder_confirm_trainingnetwork_wide-true_trainingnetwork_features-ret_1,hl_range,"
    "body,upper_wick,lower_wick,volume_ratio_24",
    "classifier_ladder_compare_confirm_trainingnetwork_wide-true_trainingnetwork_features-ret_1,"
    "hl_range,body,upper_wick,lower_wick,volume_ratio_24",
    "classifier_ladder_bars-40000_trainingnetwork_wide-true_trainingnetwork_features-ret_1,"
    "hl_range,body,upper_wick,lower_wick,volume_ratio_24_rows-vol_echo-echo",
    "classifier_ladder_bars-40000_rows-momentum-vol_trend-noise",
    "classifier_ladder_bars-40000_rows-echo-vol_echo",
    "classifier_ladder_bars-40000_trainingnetwork_wide-true_trainingnetwork_features-ret_1,"
    "hl_range,body,upper_wick,lower_wick,volume_ratio_24_rows-momentum-vol_trend-noise",
    "classifier_ladder_trainingnetwork_wide-true",
    "classifier_ladder_compare_trainingnetwork_wide-true",
    "classifier_ladder_lr_schedule-warmup_cosine",
    "classifier_ladder_trainingweight_decay-00001",
    "classifier_ladder_trainingweight_decay-001",
    "classifier_ladder_trainingnetwork_features-ret_1,hl_range,body,upper_wick,lower_wick,"
    "volume_ratio_24",
    "env",
    "ppo",
    "agent_learning",
    "agent_ladder",
    "agent_ladder_vec_env",
    "chance_test",
    "tuning",
    "end_to_end",
    "estimate",
    "vec_env",
    "runtime",
    "gpu",
    "redesign_check",
    "same_numbers",
    "same_numbers_ladder",
]
HEADER = """# Benchmarks

Every number here comes from a script in `bench/` that anyone can rerun (`make bench`, or the
command in each section); each section names the machine and the command and reports medians of
several runs.
Variants are compared as ratios measured in the same run. Regenerate this file with
`python bench/make_benchmarks_md.py` after rerunning a benchmark.
"""


def main() -> int:
    """Concatenate the results files in a fixed order (others after them, alphabetically)."""
    results = {p.stem: p for p in sorted((HERE / "results").glob("*.md"))}
    names = [n for n in ORDER if n in results] + [n for n in results if n not in ORDER]
    parts = [HEADER] + [results[n].read_text().strip() + "\n" for n in names]
    (HERE.parent / "BENCHMARKS.md").write_text("\n".join(parts))
    print(f"BENCHMARKS.md: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
