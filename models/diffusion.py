"""Gaussian diffusion (improved-/guided-diffusion conventions), model construction and checkpoint I/O.

Schedules are float64 numpy (``tests/fixtures/unet/schedules.pt`` pins them to 1e-12); tensors touch a
device only where the input already lives; randomness comes from an injected ``torch.Generator``.
``create_model_and_diffusion(**kwargs)`` takes the reference ``script_util`` kwarg names.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from core.errors import MsrsError
from models.checkpoint import load_checkpoint, load_state_dict_strict, resolve_zoo, save_checkpoint, strip_prefixes
from models.unet import UNetModel

MODEL_MEAN_TYPES = ("eps", "x0")   # what the network predicts: the noise, or x0 itself (predict_xstart)
NUM_CLASSES = 1000  # class_cond models are ImageNet-conditional in the references


# ---------------------------------------------------------------------------------------------- schedules
COSINE_S = 0.008     # improved-diffusion's cosine offset: ᾱ(τ) ∝ cos²((τ + s)/(1 + s)·π/2)


def cosine_alpha_bar(tau: float) -> float:
    """improved-diffusion's continuous, unnormalized ᾱ(τ) = cos²((τ + s)/(1 + s)·π/2), τ = t/T."""
    return math.cos((tau + COSINE_S) / (1.0 + COSINE_S) * math.pi / 2) ** 2


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """Betas (float64) of the reference named schedules."""
    T = num_diffusion_timesteps
    if name == "linear":  # Ho et al., scaled so that any T matches the T=1000 curve
        scale = 1000 / T
        return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
    if name == "cosine":  # Nichol & Dhariwal, betas capped at .999
        abar = cosine_alpha_bar
        return np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)], dtype=np.float64)
    raise MsrsError(f"unknown noise_schedule '{name}' (use linear or cosine)")


def _extract(arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """arr[t] as float32 on t's device, shaped [B, 1, ..., 1] for broadcasting over an ndim-D batch."""
    out = torch.from_numpy(arr).to(t.device)[t].float()
    return out.reshape(-1, *([1] * (ndim - 1)))


def _randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        raise ValueError("pass noise= or generator= (the global RNG is never used)")
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class GaussianDiffusion:
    """Discrete-time diffusion q(x_t|x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I) with the reference's derived arrays.

    ``model_mean_type``: 'eps' or 'x0'; ``model_var_type``: 'learned_range', 'fixed_large' or 'fixed_small'.
    ``timestep_map`` maps this (possibly respaced) schedule's indices to the network's original timesteps;
    with ``rescale_timesteps`` the network sees ``t · 1000 / original_num_steps`` (a float).
    Arrays are never modified after construction (DensePure mutates them: ALGORITHMS §8.9).
    """

    def __init__(self, betas: np.ndarray, model_mean_type: str = "eps", model_var_type: str = "fixed_large",
                 rescale_timesteps: bool = False, timestep_map: Sequence[int] | None = None,
                 original_num_steps: int | None = None):
        self.betas = np.asarray(betas, dtype=np.float64)
        assert self.betas.ndim == 1 and (self.betas > 0).all() and (self.betas <= 1).all()
        if model_mean_type not in MODEL_MEAN_TYPES:
            raise MsrsError(f"unknown model_mean_type {model_mean_type!r}; use one of {MODEL_MEAN_TYPES}")
        self.model_mean_type, self.model_var_type = model_mean_type, model_var_type
        self.predicts_eps = model_mean_type == "eps"   # the one rule: else the network's output is x0
        self.rescale_timesteps = rescale_timesteps
        self.num_timesteps = T = len(self.betas)
        self.timestep_map = np.arange(T) if timestep_map is None else np.asarray(timestep_map, dtype=np.int64)
        self.original_num_steps = original_num_steps or T

        alphas = 1.0 - self.betas
        self.alphas_cumprod = ac = np.cumprod(alphas)
        self.alphas_cumprod_prev = ac_prev = np.append(1.0, ac[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(ac)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - ac)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / ac)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / ac - 1)
        # posterior q(x_{t-1} | x_t, x_0)
        self.posterior_variance = pv = self.betas * (1.0 - ac_prev) / (1.0 - ac)
        # log clipped: the variance is 0 at t=0, so the reference repeats the t=1 value there
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]) if T > 1 else self.betas)
        self.posterior_mean_coef1 = self.betas * np.sqrt(ac_prev) / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)

    # -------------------------------------------------------------------------------- timesteps
    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep the network sees: mapped to the original schedule, rescaled to [0, 1000) if asked."""
        t = torch.from_numpy(self.timestep_map).to(t.device)[t]
        return t.float() * (1000.0 / self.original_num_steps) if self.rescale_timesteps else t

    def respaced(self, use_timesteps: Sequence[int], betas: np.ndarray | None = None) -> "GaussianDiffusion":
        """A new diffusion on a subset of timesteps, betas re-derived from ᾱ there (SpacedDiffusion), or the
        given ``betas`` (one per kept timestep, ascending; DensePure's ``core.denoise.densepure_betas``)."""
        keep = sorted(set(int(t) for t in use_timesteps))
        if betas is None:
            ac = self.alphas_cumprod[keep]
            betas = 1.0 - ac / np.append(1.0, ac[:-1])
        elif len(betas) != len(keep):
            raise ValueError(f"respaced: {len(betas)} betas for {len(keep)} timesteps")
        return GaussianDiffusion(betas, self.model_mean_type, self.model_var_type, self.rescale_timesteps,
                                 self.timestep_map[keep], self.original_num_steps)

    # -------------------------------------------------------------------------------- forward process
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε."""
        noise = _randn(x_start, generator) if noise is None else noise
        n = x_start.ndim
        return (_extract(self.sqrt_alphas_cumprod, t, n) * x_start
                + _extract(self.sqrt_one_minus_alphas_cumprod, t, n) * noise)

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = x_t/√ᾱ_t − √(1/ᾱ_t − 1) ε."""
        n = x_t.ndim
        return (_extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t
                - _extract(self.sqrt_recipm1_alphas_cumprod, t, n) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        n = x_t.ndim
        return (_extract(self.sqrt_recip_alphas_cumprod, t, n) * x_t - pred_xstart) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, n)

    def q_posterior_mean(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x_t.ndim
        return _extract(self.posterior_mean_coef1, t, n) * x_start + _extract(self.posterior_mean_coef2, t, n) * x_t

    # -------------------------------------------------------------------------------- reverse process
    def p_mean_variance(self, model: Callable, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        model_kwargs: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Mean, log-variance and x̂_0 of p(x_{t-1} | x_t); ``model(x, model_timesteps(t))`` is the network."""
        C, n = x.shape[1], x.ndim
        out = model(x, self.model_timesteps(t), **(model_kwargs or {})).float()
        if self.model_var_type == "learned_range":
            out, v = out[:, :C], out[:, C:2 * C]
            frac = (v + 1) / 2
            log_var = (frac * _extract(np.log(self.betas), t, n)
                       + (1 - frac) * _extract(self.posterior_log_variance_clipped, t, n))
        else:
            out = out[:, :C]
            if self.model_var_type == "fixed_large":
                var = np.append(self.posterior_variance[1], self.betas[1:]) if self.num_timesteps > 1 else self.betas
            else:
                var = np.exp(self.posterior_log_variance_clipped)
            log_var = _extract(np.log(var), t, n).expand_as(x)
        pred_xstart = self.predict_xstart_from_eps(x, t, out) if self.predicts_eps else out
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        return {"mean": self.q_posterior_mean(pred_xstart, x, t), "log_variance": log_var, "pred_xstart": pred_xstart}

    def p_sample(self, model: Callable, x: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None = None,
                 clip_denoised: bool = True, noise: torch.Tensor | None = None,
                 model_kwargs: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """One reverse step x_t → x_{t-1} ~ p(x_{t-1} | x_t); no noise where t == 0."""
        out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
        nonzero = (t != 0).float().reshape(-1, *([1] * (x.ndim - 1)))
        if bool(nonzero.any()):
            noise = _randn(x, generator) if noise is None else noise
            sample = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
        else:
            sample = out["mean"]
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    # -------------------------------------------------------------------------------- training
    def training_loss(self, model: Callable, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                      model_kwargs: Mapping[str, Any] | None = None) -> torch.Tensor:
        """Per-sample MSE [B] between the network's ε (or x̂_0 for predict_xstart) and its target at x_t.

        Only the first C output channels are trained (a learn_sigma model's variance channels get no
        gradient: the reference's hybrid VLB term is not implemented).
        """
        x_t = self.q_sample(x0, t, noise)
        out = model(x_t, self.model_timesteps(t), **(model_kwargs or {}))[:, :x0.shape[1]].float()
        target = noise if self.predicts_eps else x0
        return ((out - target.float()) ** 2).mean(dim=tuple(range(1, x0.ndim)))


# ---------------------------------------------------------------------------------------------- configs
MODEL_AND_DIFFUSION_DEFAULTS: dict[str, Any] = dict(   # improved-diffusion's, plus guided-diffusion's extras
    image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
    num_head_channels=-1, attention_resolutions="16,8", channel_mult="", dropout=0.0, learn_sigma=False,
    sigma_small=False, class_cond=False, diffusion_steps=1000, noise_schedule="linear", timestep_respacing="",
    use_kl=False, predict_xstart=False, rescale_timesteps=True, rescale_learned_sigmas=True,
    use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False, use_fp16=False,
    use_new_attention_order=False)

NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    # improved-diffusion cifar10_uncond_50M_500K.pt (DDS / MDDS CIFAR-10)
    "improved-cifar10-uncond": dict(
        image_size=32, num_channels=128, num_res_blocks=3, num_heads=4, num_heads_upsample=-1,
        attention_resolutions="16,8", dropout=0.3, learn_sigma=True, sigma_small=False, class_cond=False,
        diffusion_steps=4000, noise_schedule="cosine", timestep_respacing="", use_kl=False, predict_xstart=False,
        rescale_timesteps=True, rescale_learned_sigmas=True, use_checkpoint=False, use_scale_shift_norm=True),
    # guided-diffusion 256x256_diffusion_uncond.pt (DDS / MDDS ImageNet)
    "guided-256-uncond": dict(
        image_size=256, num_channels=256, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
        num_head_channels=64, attention_resolutions="32,16,8", channel_mult="", dropout=0.0, class_cond=False,
        use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=True, use_fp16=True,
        use_new_attention_order=False, learn_sigma=True, diffusion_steps=1000, noise_schedule="linear",
        timestep_respacing="", use_kl=False, predict_xstart=False, rescale_timesteps=False,
        rescale_learned_sigmas=False),
    # embedded default: 16x16 RGB digits, trained on CPU (zoo:digits_ddpm). No encoder ResBlocks and
    # 32 channels everywhere keep it at ~15 MMAC/sample: GroupNorm(32) forbids fewer channels, and the
    # full-resolution decoder block dominates the cost.
    "digits-ddpm": dict(
        image_size=16, num_channels=32, num_res_blocks=0, num_heads=1, num_heads_upsample=-1,
        attention_resolutions="", channel_mult="1,1,1", dropout=0.0, learn_sigma=False, sigma_small=False,
        class_cond=False, diffusion_steps=1000, noise_schedule="cosine", timestep_respacing="", use_kl=False,
        predict_xstart=False, rescale_timesteps=True, rescale_learned_sigmas=True, use_checkpoint=False,
        use_scale_shift_norm=True),
}
# the small random-weight fixture UNet with the CIFAR-10 diffusion (tests/fixtures/dds)
NAMED_CONFIGS["improved-small"] = {**NAMED_CONFIGS["improved-cifar10-uncond"], "num_channels": 32, "num_res_blocks": 1,
                                   "num_heads": 2, "attention_resolutions": "16", "dropout": 0.0}

_DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
                         64: (1, 2, 3, 4), 32: (1, 2, 2, 2), 28: (1, 2, 2), 16: (1, 2, 2)}


def resolve_kwargs(**kwargs: Any) -> dict[str, Any]:
    """Defaults + kwargs; unknown names are an error."""
    unknown = sorted(set(kwargs) - set(MODEL_AND_DIFFUSION_DEFAULTS))
    if unknown:
        raise MsrsError(f"unknown diffusion config key(s) {unknown}; known: {sorted(MODEL_AND_DIFFUSION_DEFAULTS)}")
    return {**MODEL_AND_DIFFUSION_DEFAULTS, **kwargs}


def _parse_mult(channel_mult: Any, image_size: int) -> tuple:
    if channel_mult in ("", None):
        if image_size not in _DEFAULT_CHANNEL_MULT:
            raise MsrsError(f"no default channel_mult for image_size {image_size}; pass channel_mult, e.g. '1,2,2'")
        return _DEFAULT_CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str):
        return tuple(float(m) if "." in m else int(m) for m in channel_mult.split(","))
    return tuple(channel_mult)


def create_model(image_size: int, num_channels: int, num_res_blocks: int, channel_mult: Any = "",
                 learn_sigma: bool = False, class_cond: bool = False, use_checkpoint: bool = False,
                 attention_resolutions: Any = "16", num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = False, dropout: float = 0.0,
                 resblock_updown: bool = False, use_fp16: bool = False,
                 use_new_attention_order: bool = False) -> UNetModel:
    """The reference ``create_model``: attention resolutions in pixels become downsample rates."""
    if isinstance(attention_resolutions, str):
        attention_resolutions = [int(r) for r in attention_resolutions.split(",") if r.strip()]
    return UNetModel(
        in_channels=3, model_channels=num_channels, out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks, attention_resolutions=tuple(image_size // r for r in attention_resolutions),
        dropout=dropout, channel_mult=_parse_mult(channel_mult, image_size),
        num_classes=NUM_CLASSES if class_cond else None, use_checkpoint=use_checkpoint, use_fp16=use_fp16,
        num_heads=num_heads, num_head_channels=num_head_channels, num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order)


def create_gaussian_diffusion(steps: int = 1000, learn_sigma: bool = False, sigma_small: bool = False,
                              noise_schedule: str = "linear", use_kl: bool = False, predict_xstart: bool = False,
                              rescale_timesteps: bool = False, rescale_learned_sigmas: bool = False,
                              timestep_respacing: str = "") -> GaussianDiffusion:
    """The reference ``create_gaussian_diffusion`` without respacing (use ``GaussianDiffusion.respaced``)."""
    if timestep_respacing not in ("", None):
        raise MsrsError(f"timestep_respacing={timestep_respacing!r} is not supported; use '' "
                        "(DensePure multi-step uses --num_t_steps)")
    # use_kl / rescale_learned_sigmas choose the reference's training loss; inference does not need them
    var_type = "learned_range" if learn_sigma else ("fixed_small" if sigma_small else "fixed_large")
    return GaussianDiffusion(get_named_beta_schedule(noise_schedule, steps), "x0" if predict_xstart else "eps",
                             var_type, rescale_timesteps)


def create_model_and_diffusion(**kwargs: Any) -> tuple[UNetModel, GaussianDiffusion]:
    """(UNet, diffusion) from the reference script_util kwargs (missing ones take the defaults)."""
    k = resolve_kwargs(**kwargs)
    model = create_model(
        k["image_size"], k["num_channels"], k["num_res_blocks"], channel_mult=k["channel_mult"],
        learn_sigma=k["learn_sigma"], class_cond=k["class_cond"], use_checkpoint=k["use_checkpoint"],
        attention_resolutions=k["attention_resolutions"], num_heads=k["num_heads"],
        num_head_channels=k["num_head_channels"], num_heads_upsample=k["num_heads_upsample"],
        use_scale_shift_norm=k["use_scale_shift_norm"], dropout=k["dropout"],
        resblock_updown=k["resblock_updown"], use_fp16=k["use_fp16"],
        use_new_attention_order=k["use_new_attention_order"])
    diffusion = create_gaussian_diffusion(
        k["diffusion_steps"], k["learn_sigma"], k["sigma_small"], k["noise_schedule"], k["use_kl"],
        k["predict_xstart"], k["rescale_timesteps"], k["rescale_learned_sigmas"], k["timestep_respacing"])
    return model, diffusion


# ---------------------------------------------------------------------------------------------- checkpoints
def config_kwargs(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a config: a NAMED_CONFIGS name, a JSON file (kwargs, or a dict with "kwargs"), or a dict."""
    if isinstance(config, Mapping):
        return resolve_kwargs(**config)
    if config in NAMED_CONFIGS:
        return resolve_kwargs(**NAMED_CONFIGS[config])
    if config.endswith(".json") or os.path.isfile(config):
        if not os.path.isfile(config):
            raise MsrsError(f"diffusion config file not found: {config}")
        try:
            with open(config) as f:
                obj = json.load(f)
        except (OSError, ValueError) as e:
            raise MsrsError(f"cannot read diffusion config {config}: {e}") from None
        return resolve_kwargs(**(obj["kwargs"] if "kwargs" in obj else obj))
    raise MsrsError(f"unknown diffusion config '{config}'; use one of {sorted(NAMED_CONFIGS)} or a JSON file of kwargs")


def split_diffusion_checkpoint(obj: Any, path: str, config: str | Mapping | None) -> tuple[dict, dict]:
    """(resolved kwargs, state_dict) from our self-describing file or an OpenAI raw state dict + config."""
    if isinstance(obj, Mapping) and "kind" in obj:
        if obj["kind"] != "diffusion" or obj.get("arch") != "openai_unet":
            raise MsrsError(f"{path} is a '{obj['kind']}/{obj.get('arch')}' checkpoint, not a diffusion model")
        return resolve_kwargs(**obj["args"]), dict(obj["state_dict"])
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not (isinstance(obj, Mapping) and obj and all(torch.is_tensor(v) for v in obj.values())):
        raise MsrsError(f"{path} is not a diffusion checkpoint (expected a UNet state dict or a "
                        "{'kind': 'diffusion', ...} file)")
    if config is None:
        raise MsrsError(f"{path} is a raw UNet state dict with no config: pass --denoiser_config NAME "
                        f"(one of {', '.join(sorted(NAMED_CONFIGS))}) or a JSON file of kwargs")
    return config_kwargs(config), dict(obj)


def load_diffusion(path_or_zoo: str, config: str | Mapping | None = None,
                   trust: bool = False) -> tuple[UNetModel, GaussianDiffusion, dict[str, Any]]:
    """Load a diffusion UNet (strictly, float32, eval mode) and its diffusion; returns (model, diffusion, kwargs).

    Reads OpenAI raw state dicts (with a named config or JSON kwargs) and our
    ``{"kind": "diffusion", "arch": "openai_unet", "args", "state_dict"}`` files (the file's args win).
    Call ``model.convert_to_fp16()`` for the reference's use_fp16 runtime; ``--amp`` uses autocast instead.
    """
    path = resolve_zoo(path_or_zoo)
    kwargs, sd = split_diffusion_checkpoint(load_checkpoint(path, trust=trust), path, config)
    model, diffusion = create_model_and_diffusion(**kwargs)
    load_state_dict_strict(model, strip_prefixes(sd), path)
    return model.eval(), diffusion, kwargs


def save_diffusion(model: UNetModel, kwargs: Mapping[str, Any], path: str,
                   extra: Mapping[str, Any] | None = None) -> None:
    """Write our self-describing diffusion file (float32 weights; ``extra`` adds e.g. step/EMA entries)."""
    model = getattr(model, "_orig_mod", getattr(model, "module", model))
    obj = {"kind": "diffusion", "arch": "openai_unet", "args": resolve_kwargs(**kwargs),
           "state_dict": {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                          for k, v in model.state_dict().items()}}
    clash = set(extra or {}) & set(obj)
    if clash:
        raise ValueError(f"extra may not override {sorted(clash)}")
    save_checkpoint({**obj, **(extra or {})}, path)
