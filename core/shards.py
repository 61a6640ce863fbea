"""``python -m core.shards merge OUTFILE --num_shards N``, where users type it; the code is
``core.runs.shards`` (this launcher is the one module of core/ that imports the run machinery)."""
from core.runs.parsers import run_cli
from core.runs.shards import get_args_parser, main

if __name__ == "__main__":
    run_cli(main, get_args_parser())
