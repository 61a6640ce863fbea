"""Reading the models a run smooths: the denoiser of ``--denoiser`` (one network shared by every sigma),
the default denoiser of each dataset family (``--denoiser auto``), and the hashes of the files read."""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from core.denoise import DiffusionDenoiser
from core.errors import MsrsError
from core.runs.blackbox import require_query_log
from core.runs.files import file_sha256
from core.runs.protocols import dataset_family
from models.checkpoint import (
    load_checkpoint,
    load_state_dict_strict,
    require_checkpoint_file,
    resolve_zoo,
    strip_prefixes,
)
from models.classifiers import resolve_classifier_path
from models.diffusion import create_model_and_diffusion, split_diffusion_checkpoint
from models.dncnn import is_dncnn_checkpoint, load_dncnn
from models.memnet import is_memnet_checkpoint, load_memnet

# --denoiser auto: the diffusion model each dataset family is smoothed with, where the MDDS scripts keep it
# (path, named config for raw OpenAI state dicts). The ImageNet padding is the protocol's (--pad_to).
DEFAULT_DENOISERS = {
    "digits": ("zoo:digits_ddpm", "digits-ddpm"),
    "cifar10": ("OUTPUT/denoising_models/cifar10_uncond_50M_500K.pt", "improved-cifar10-uncond"),
    "imagenet": ("OUTPUT/denoising_models/imagenet/256x256_diffusion_uncond.pt", "guided-256-uncond"),
}


def resolve_denoiser_args(args: argparse.Namespace, dataset: str) -> None:
    """Fill --denoiser auto and --denoiser_config from the dataset family (MDDS's paths); --pad_to 0 = none."""
    fam = DEFAULT_DENOISERS.get(dataset_family(dataset))
    if args.denoiser == "auto":
        if args.classifier.startswith("querylog:"):
            args.denoiser = "none"
        elif fam is None:
            raise MsrsError(f"no default denoiser for dataset {dataset!r}: pass --denoiser PATH or --denoiser none")
        else:
            args.denoiser = fam[0]
            if not fam[0].startswith("zoo:") and not os.path.isfile(fam[0]):
                raise MsrsError(f"the default {dataset} denoiser is not at {fam[0]}: put the OpenAI checkpoint "
                                "there, pass --denoiser PATH (--ddpm_path), or --denoiser none for plain smoothing")
    if args.denoiser != "none" and fam is not None and args.denoiser_config is None:
        args.denoiser_config = fam[1]
    if args.pad_to == 0:
        args.pad_to = None


def _salman_net(obj: Any, path: str, num_t_steps: int) -> nn.Module | None:
    """A DnCNN / MemNet checkpoint's network (one for every sigma), None for any other checkpoint."""
    if not (is_dncnn_checkpoint(obj) or is_memnet_checkpoint(obj)):
        return None
    if num_t_steps != 1:
        raise MsrsError(f"{path} is a Salman denoiser: --num_t_steps applies to diffusion denoisers only")
    return (load_dncnn if is_dncnn_checkpoint(obj) else load_memnet)(obj, path).eval()


def load_denoisers(spec: str, sigmas: list[float], config: str | Mapping[str, Any] | None = None,
                   trust: bool = False, num_t_steps: int = 1, pad_to: int | None = None,
                   clip: bool = True, noise: str = "add", t_rule: str = "first", respacing: str = "discrete",
                   unet_fp16: bool = False) -> dict[float, nn.Module] | None:
    """``--denoiser`` → {sigma: module (CPU, eval) mapping noisy pixels to denoised pixels}, or None for 'none'.

    The checkpoint is read once and one network is shared by every sigma (a cascade over an ImageNet
    UNet holds it once). spec: 'none', ``zoo:NAME`` or a path. Salman's DnCNN and MemNet files go to
    ``models.dncnn.load_dncnn`` / ``models.memnet.load_memnet`` (one denoiser for every sigma); diffusion
    checkpoints (OpenAI raw state dicts need ``config``: a name or JSON file) become one DiffusionDenoiser
    per sigma with the protocol's ``noise`` / ``t_rule`` / ``respacing``; ``unet_fp16`` puts the UNet in the
    references' use_fp16 runtime mode when its config asks for it (guided-diffusion ImageNet).
    """
    if spec is None or spec.lower() == "none":
        return None
    path = resolve_zoo(spec)
    obj = load_checkpoint(path, trust=trust)
    net = _salman_net(obj, path, num_t_steps)
    if net is not None:
        return {float(s): net for s in sigmas}
    kwargs, sd = split_diffusion_checkpoint(obj, path, config)
    model, diffusion = create_model_and_diffusion(**kwargs)
    load_state_dict_strict(model, strip_prefixes(sd), path)
    model.eval()
    if unet_fp16 and kwargs.get("use_fp16"):
        model.convert_to_fp16()
    return {float(s): DiffusionDenoiser(model, diffusion, s, num_t_steps, pad_to, clip, noise=noise, t_rule=t_rule,
                                        respacing=respacing, schedule=kwargs["noise_schedule"]).eval()
            for s in sigmas}


def load_denoiser(spec: str, config: str | Mapping[str, Any] | None = None, sigma: float | None = None,
                  trust: bool = False, num_t_steps: int = 1, pad_to: int | None = None,
                  clip: bool = True) -> nn.Module | None:
    """One sigma's denoiser (see ``load_denoisers``); ``sigma`` is needed for diffusion checkpoints."""
    if spec is None or spec.lower() == "none":
        return None
    if sigma is not None:
        return load_denoisers(spec, [sigma], config, trust, num_t_steps, pad_to, clip)[float(sigma)]
    path = resolve_zoo(spec)
    net = _salman_net(load_checkpoint(path, trust=trust), path, num_t_steps)   # the file is read once
    if net is None:
        raise MsrsError(f"{path} is a diffusion denoiser: it needs the smoothing sigma")
    return net


def checkpoint_hashes(args: argparse.Namespace) -> dict[str, str | None]:
    """sha256 of the files the run reads, resolved by the loaders' own rules (zoo:, checkpoint dirs, logs);
    a missing file is an error here, before anything is loaded."""
    clf = args.classifier
    if clf.startswith("querylog:"):
        clf = require_query_log(clf[len("querylog:"):])
    else:
        clf = require_checkpoint_file(resolve_classifier_path(clf))
    den = None if args.denoiser == "none" else require_checkpoint_file(resolve_zoo(args.denoiser),
                                                                      "denoiser checkpoint")
    return {"classifier": file_sha256(clf), "denoiser": file_sha256(den)}
