"""DensePure's eval_certified_densepure.py command line, run by msrs certify.py (Xiao et al. 2023).

    python eval_certified_densepure.py --exp exp --config cifar10.yml --domain cifar10 --seed 0 \\
        --diffusion_type ddpm --lp_norm L2 --outfile results/OUT --sigma 0.25 --N 100000 --N0 100 \\
        --certified_batch 100 --sample_id 0 --use_id --certify_mode purify --advanced_classifier vit \\
        --use_t_steps --num_t_steps 2 --reverse_seed 0

Same flags, defaults and output files as DensePure's script (purify: OUTFILE_diffpure, base: OUTFILE,
Cohen's columns); the DensePure protocol; any optional flag of certify.py may be added (e.g.
--reverse_seeds K votes K reverse runs per noise sample in one run, --device, --data_path). The
mapping of every flag is in core/runs/compat.py and docs/FROM_THE_PAPERS.md.
"""
import certify
from core.runs.parsers import run_cli

if __name__ == "__main__":
    run_cli(certify.main, certify.get_args_parser(), form="eval_certified_densepure")
