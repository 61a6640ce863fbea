"""Salman et al.'s code/test_denoiser.py on msrs: how good a denoiser is, alone and in front of a classifier.

    python test_denoiser.py --dataset cifar10 --denoiser DEN/checkpoint.pth.tar --clf CLF --noise 0.25

Prints, as theirs does, the denoising MSE ‖D(x+δ) − x‖² (mean over pixels, then images) and the top-1
accuracy (%) of the classifier on D(x+δ) and on x+δ, δ ~ N(0, σ²), over the test set; writes the first
image of the last batch, clean and denoised, to OUTDIR/clean.png and OUTDIR/denoised.png. Any denoiser
certify.py reads works (DnCNN, diffusion). Noise comes from a generator seeded with --seed (theirs: the
global RNG after torch.manual_seed(0)), so the figures are theirs only up to the noise draw.
See docs/FROM_THE_PAPERS.md.
"""
from __future__ import annotations

import argparse
import os

import torch

from core.errors import MsrsError


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("test_denoiser.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("Salman et al.'s flags")
    g.add_argument("--dataset", required=True, help="cifar10, imagenet, ... (any msrs dataset)")
    g.add_argument("--denoiser", required=True, help="denoiser checkpoint (DnCNN checkpoint.pth.tar, diffusion, zoo:NAME)")
    g.add_argument("--clf", required=True, help="classifier checkpoint ('' skips the accuracy figures)")
    g.add_argument("--outdir", default="tmp_out/", help="where clean.png and denoised.png go")
    g.add_argument("--workers", type=int, default=4, help="data-loading workers")
    g.add_argument("--batch", type=int, default=256, help="images per batch")
    g.add_argument("--gpu", default=None, help="accepted, no effect (use CUDA_VISIBLE_DEVICES or --device)")
    g.add_argument("--print-freq", dest="print_freq", type=int, default=10, help="accepted, no effect")
    g.add_argument("--noise_sd", "--noise", dest="noise_sd", type=float, default=0.0,
                   help="sigma of the Gaussian noise (pixels in [0,1]); --noise is the README's spelling")
    g.add_argument("--test-subset", dest="test_subset", action="store_true",
                   help="only a random 1%% of the test set (drawn with --seed)")
    g = p.add_argument_group("msrs")
    g.add_argument("--data_path", default="datasets")
    g.add_argument("--denoiser_config", default=None, help="named config for a raw OpenAI diffusion checkpoint")
    g.add_argument("--device", default="auto")
    g.add_argument("--seed", type=int, default=0, help="noise (and --test-subset) seed")
    g.add_argument("--trust_checkpoint", action="store_true")
    return p


def main(args: argparse.Namespace) -> dict[str, float]:
    from torchvision.utils import save_image

    from core import engine
    from core.denoise import load_denoiser
    from core.pipeline import resolve_device
    from datasets import dataset_info, get_dataset
    from finetune_diffusion import eval_denoiser
    from models.classifiers import load_classifier
    if not args.noise_sd >= 0:
        raise MsrsError(f"--noise_sd must be >= 0, got {args.noise_sd}")
    device = resolve_device(args.device)
    den = load_denoiser(args.denoiser, args.denoiser_config, sigma=args.noise_sd or None,
                        trust=args.trust_checkpoint).to(device).eval()
    test = get_dataset(args.dataset, "test", args.data_path)
    if args.test_subset:
        n = len(test) // 100
        test = torch.utils.data.random_split(test, [n, len(test) - n], torch.Generator().manual_seed(args.seed))[0]
    loader = engine.make_loader(test, args.batch, train=False, seed=args.seed, num_workers=args.workers)
    clf = None
    if args.clf:
        clf = load_classifier(args.clf, num_classes=dataset_info(args.dataset).num_classes,
                              trust=args.trust_checkpoint).to(device).eval()
    s = args.noise_sd
    res = eval_denoiser(lambda _: den, clf, loader, device, [s], args.seed, None)
    results = {"denoising_MSE": res[f"mse_{s:g}"]}
    print(f"MSE of the denoiser is {results['denoising_MSE']}")
    if clf is not None:
        results["clf_acc_with_denoiser"] = res[f"acc_{s:g}"]
        print(f"Accuracy WITH denoiser at noise of {s:.2f} is {results['clf_acc_with_denoiser']}")
        bare = eval_denoiser(lambda _: (lambda x: x), clf, loader, device, [s], args.seed, None)
        results["clf_acc_without_denoiser"] = bare[f"acc_{s:g}"]
        print(f"Accuracy WITHOUT denoiser at noise of {s:.2f} is {results['clf_acc_without_denoiser']}")
    x = test[(len(test) - 1) // args.batch * args.batch][0].unsqueeze(0).to(device)   # first of the last batch
    g = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        x_hat = den(x + s * torch.randn(x.shape, generator=g, device=device)).float().clamp(0, 1)
    os.makedirs(args.outdir, exist_ok=True)
    save_image(x[0], os.path.join(args.outdir, "clean.png"))
    save_image(x_hat[0], os.path.join(args.outdir, "denoised.png"))
    return results


if __name__ == "__main__":
    from core.cli import run_cli
    run_cli(main, get_args_parser())
