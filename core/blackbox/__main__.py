"""``python -m core.blackbox export DATASET OUTDIR --sigma S --N N``: the noisy query images of the
black-box mode, written by ``core.runs.blackbox`` (this launcher is the one part of ``core.blackbox``
that imports the run machinery)."""
from core.runs.blackbox import get_args_parser, main
from core.runs.parsers import run_cli

run_cli(main, get_args_parser())
