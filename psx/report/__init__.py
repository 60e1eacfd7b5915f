"""`psx report`: runs and sweeps -> terminal tables, CSV/Markdown, PNG plots and one report.html.

runs.py (find and load run folders) -> aggregate.py (mean ± std, gaps) -> tables.py (text),
plots.py (figures), html.py (the page); from_wandb.py reads W&B runs into the same table;
command.py is the command line.
"""
