"""`psx report`: runs and sweeps -> terminal tables, CSV/Markdown, PNG plots and one report.html.

runs.py (find run folders; files.py reads them, never raising) and from_wandb.py (W&B runs) ->
records.py (one checked row per run; checks.py) -> aggregate.py (mean ± std per group) and
compare.py (each arm against its family's reference arm; stats.py) -> tables.py (text),
terminal.py, plots.py, html.py; output.py writes the report folder whole; command.py is the
command line.
"""
