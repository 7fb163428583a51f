"""lossbench report: leaderboard tables, figures, claims and the static HTML site.

Entry point: `lossbench.report.build.build_report(results_dir, out_dir, title=..., note=None)` or
`python -m lossbench.report.build RESULTS_DIR OUT_DIR`.
"""
