"""Training objectives: small functions ``loss, metrics = objective(...)`` used by `core.train.engine`.

Each takes the model(s), a pixel batch ``x`` [B,C,H,W] in [0,1] and labels ``y`` [B], and returns a
scalar loss plus a dict of detached scalar metrics for the log. Noise is drawn with ``generator``
(``None``: the global RNG, whose state the engine saves in every checkpoint, so a resumed run draws
the same noise as an uninterrupted one).

  clean_ce         FT-CLIP / MDDS: cross-entropy with label smoothing on clean images (ALGORITHMS §3e)
  consistency      MDDS ``consistency.py`` regularizer on Gaussian copies: CE + λ·KL(p̄‖p_i) + η·H(p̄)
  ft_cadis         FT-CADIS (§4): confidence-aware selective CE + masked adversarial KL on denoised copies
  mdds_diffusion   MDDS diffusion fine-tuning (§3d): Brier (recoverable) + α·‖p̄‖² (non-recoverable)
                   + λ·ε-MSE
  ddpm             plain DDPM ε-MSE (improved-diffusion ``L_simple``)
  dncnn_*          Salman et al. (§6): mse, classification, stability
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Metrics = dict[str, torch.Tensor]


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (logits.detach().argmax(1) == y).float().mean()


class frozen:
    """Context: `model` in eval mode with every parameter's requires_grad off; both restored on exit.

    Used for the FT-CADIS attack (the classifier is attacked, not trained, there) and for frozen
    classifiers inside denoiser objectives.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self) -> nn.Module:
        self.training = self.model.training
        self.flags = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self.model

    def __exit__(self, *exc) -> None:
        for p, f in zip(self.model.parameters(), self.flags):
            p.requires_grad_(f)
        self.model.train(self.training)


# ---- classifier objectives (train_clip.py) ------------------------------------------------------

def clean_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             smoothing: float = 0.1) -> tuple[torch.Tensor, Metrics]:
    """FT-CLIP: CE with label smoothing on clean images (timm LabelSmoothingCrossEntropy ≡ torch's)."""
    logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
    return loss, {"acc": _acc(logits, y)}


def consistency(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float, num_noises: int = 2,
                lbd: float = 10.0, eta: float = 0.5, smoothing: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, Metrics]:
    """MDDS ``consistency.py`` ('default' form) on m = `num_noises` Gaussian copies x + σ·δ_i:

        L = mean_i CE(f(x+σδ_i), y) + λ·(1/m)Σ_i KL(p̄ ‖ p_i) + η·H(p̄),
        p̄ = (1/m)Σ_i p_i (not detached).
    """
    B, m = x.shape[0], num_noises
    xs = x.repeat(m, 1, 1, 1)                                       # copy-major: rows i·B + b
    logits = model(xs + sigma * _randn(xs, generator)).float()
    ce = F.cross_entropy(logits, y.repeat(m), label_smoothing=smoothing)
    logp = F.log_softmax(logits, 1).view(m, B, -1)
    p_bar = logp.exp().mean(0)
    kl = (p_bar * (p_bar.clamp_min(1e-20).log()[None] - logp)).sum(-1).mean(0)   # (1/m)Σ_i KL(p̄‖p_i), [B]
    ent = -(p_bar * p_bar.clamp_min(1e-20).log()).sum(-1)
    reg = (lbd * kl + eta * ent).mean()
    return ce + reg, {"acc": _acc(logits, y.repeat(m)), "ce": ce.detach(), "reg": reg.detach()}


def _l2(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1).view(-1, *([1] * (x.ndim - 1)))


def ft_cadis_attack(classifier: nn.Module, x: torch.Tensor, x_hat: torch.Tensor, p_bar: torch.Tensor, eps: float,
                    num_steps: int, num_noises: int) -> torch.Tensor:
    """FT-CADIS L2 search for the masked adversarial loss (their ``PGD.attack``), in pixel space.

    x: clean [M·B,C,H,W] (copy-major), x_hat: denoised copies, p_bar: consistent targets [B,K] (used as
    constants here). From η⁰ = x̂ − x (no random start), `num_steps` ascent steps of size 2ε/steps along
    the per-sample normalized gradient of (1/M)Σ_j KL(p̄ ‖ f(x + η_j)); project ‖η − η⁰‖ ≤ ε, then
    re-standardize per sample as the reference does, η ← μ(η⁰) + (η − μ(η))/RMS(η)·RMS(η⁰) (the mean
    is restored exactly; RMS, not std, so the spread only approximately). The caller freezes f
    (eval mode, no parameter grads).
    Returns η* (detached).
    """
    n = x.shape[0]
    eta0 = (x_hat - x).detach()
    dims = tuple(range(1, x.ndim))
    mu0 = eta0.mean(dims, keepdim=True)
    rms0 = eta0.pow(2).mean(dims, keepdim=True).sqrt()
    target = p_bar.detach().repeat(num_noises, 1)
    step = eps / num_steps * 2
    eta = eta0.clone()
    for _ in range(num_steps):
        eta.requires_grad_(True)
        logp = F.log_softmax(classifier(x + eta).float(), 1)
        loss = F.kl_div(logp, target, reduction="none").sum() / num_noises
        grad, = torch.autograd.grad(loss, [eta])
        eta = eta.detach() + step * grad / (_l2(grad) + 1e-8)
        eta = eta0 + (eta - eta0).renorm(p=2, dim=0, maxnorm=eps)
        mu, rms = eta.mean(dims, keepdim=True), eta.pow(2).mean(dims, keepdim=True).sqrt()
        eta = (mu0 + (eta - mu) / rms * rms0).detach()
    assert eta.shape[0] == n
    return eta


def ft_cadis(model: nn.Module, denoiser: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             sigma: float, num_noises: int = 4, lbd: float = 4.0, eps: float = 64.0, num_steps: int = 4,
             warm_start: bool = False, attack_model: nn.Module | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, Metrics]:
    """FT-CADIS loss (Jang et al., TMLR'24; ALGORITHMS §4) for one micro-batch of B clean images.

    M = `num_noises` copies x + σδ_j are denoised by the frozen `denoiser` (no grad), x̂_j = D(x + σδ_j).
      p_j = softmax f(x̂_j), ok_j = [argmax p_j = y], p̄ = (1/M)Σ_j p_j.
      L_SCE  = (1/M) Σ_j ok_j · CE(f(x̂_j), y); with `warm_start` an image with no ok copy keeps its
               lowest-CE copy.
      L_MAdv = λ · 1[all ok] · max_j KL(p̄ ‖ softmax f(x + η*_j)), η* from `ft_cadis_attack` with
               f frozen and ε = eps/512 in pixels (the reference's eps/256 in [−1,1]).
      loss   = mean_b (L_SCE + L_MAdv).
    Pitfall 11, kept as in the reference: p̄ is *not* detached in L_MAdv, so the KL also pulls the
    clean-denoised predictions p_j towards the adversarial ones (gradient through the target); the
    attack itself treats p̄ as a constant. `attack_model` is the unwrapped classifier (not DDP/DeepSpeed).
    """
    B, M = x.shape[0], num_noises
    xs = x.repeat(M, 1, 1, 1)                                         # copy-major, as the reference
    ys = y.repeat(M)
    with torch.no_grad():
        x_hat = denoiser(xs + sigma * _randn(xs, generator)).float()
    logits0 = model(x_hat).float()
    ok = (logits0.detach().argmax(1) == ys).view(M, B).T              # [B, M]
    p_bar = F.softmax(logits0, 1).view(M, B, -1).mean(0)              # [B, K], carries gradients

    ce = F.cross_entropy(logits0, ys, reduction="none").view(M, B).T  # [B, M]
    keep = ok.clone()
    if warm_start:
        none_ok = ~ok.any(1)
        keep[none_ok, ce.detach()[none_ok].argmin(1)] = True
    loss_sce = (ce * keep).mean(1)

    attacker = attack_model if attack_model is not None else model
    with frozen(attacker):
        eta = ft_cadis_attack(attacker, xs, x_hat, p_bar, eps / 512.0, num_steps, M)
    logits_adv = model(xs + eta).float()
    kl = F.kl_div(F.log_softmax(logits_adv, 1), p_bar.repeat(M, 1), reduction="none").sum(1).view(M, B).T
    mask = ok.all(1)
    loss_madv = lbd * kl.max(1).values * mask
    loss = (loss_sce + loss_madv).mean()
    return loss, {"acc": _acc(logits0, ys), "sce": loss_sce.mean().detach(), "madv": loss_madv.mean().detach(),
                  "all_ok": mask.float().mean()}


# ---- diffusion objectives (finetune_diffusion.py) --------------------------------------------------

def ddpm(model: nn.Module, diffusion, x: torch.Tensor, t_max: int | None = None,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, Metrics]:
    """ε-prediction MSE at t ~ U{0, …, t_max−1} (t_max = T by default) on u = 2x − 1."""
    u = 2.0 * x - 1.0
    T = diffusion.num_timesteps if t_max is None else min(int(t_max), diffusion.num_timesteps)
    t = torch.randint(0, T, (x.shape[0],), generator=generator, device=x.device)
    loss = diffusion.training_loss(model, u, t, _randn(u, generator)).mean()
    return loss, {"mse": loss.detach()}


def mdds_diffusion(denoisers: Sequence[nn.Module], classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   num_noises: int = 4, ac_weight: float = 1.0, diff_weight: float = 1.0,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, Metrics]:
    """MDDS "consistent when recoverable, diverse otherwise" (ALGORITHMS §3d, our formulation).

    `denoisers`: one `core.denoise.DiffusionDenoiser` per training σ, all sharing the trainable UNet
    (``.model``) and diffusion; each has its fixed t* (the certify-time one-shot x̂0, clip on).
    `classifier` is frozen (eval mode, no parameter grads): gradients flow through it into the UNet.
    Per image: σ uniform over the set, M ≥ 2 draws x̂_i = D_σ(x + σδ_i), p_i = softmax f(x̂_i),
    recoverable_i = [argmax p_i = y] (no grad):
      L_Brier = Σ_{recoverable (b,i)} ‖p_i − e_y‖² / #recoverable draws in the batch
      L_AC    = mean over images with ≥ 2 non-recoverable draws of ‖mean_{non-rec. i} p_i‖²
      L_diff  = ε-MSE at t ~ U{0..T−1}
      loss    = L_Brier + ac_weight·L_AC + diff_weight·L_diff
    """
    B, M = x.shape[0], num_noises
    if M < 2:
        raise ValueError("mdds_diffusion needs num_noises >= 2")
    model, diffusion = denoisers[0].model, denoisers[0].diffusion
    sigmas = torch.tensor([float(d.sigma) for d in denoisers], device=x.device)
    k = torch.randint(0, len(denoisers), (B,), generator=generator, device=x.device)
    xs, ks = x.repeat_interleave(M, 0), k.repeat_interleave(M)           # image-major: rows b·M + i
    noisy = xs + sigmas[ks].view(-1, 1, 1, 1) * _randn(xs, generator)
    x_hat = torch.zeros_like(noisy)
    for j, den in enumerate(denoisers):
        sel = ks == j
        if bool(sel.any()):
            x_hat[sel] = den(noisy[sel]).to(x_hat.dtype)
    p = F.softmax(classifier(x_hat).float(), 1).view(B, M, -1)          # [B, M, K]
    loss_brier, loss_ac, rec = mdds_terms(p, y)

    u = 2.0 * x - 1.0
    t = torch.randint(0, diffusion.num_timesteps, (B,), generator=generator, device=x.device)
    loss_diff = diffusion.training_loss(model, u, t, _randn(u, generator)).mean()

    loss = loss_brier + ac_weight * loss_ac + diff_weight * loss_diff
    return loss, {"brier": loss_brier.detach(), "ac": loss_ac.detach(), "diff": loss_diff.detach(),
                  "recoverable": rec.float().mean()}


def mdds_terms(p: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classifier terms of `mdds_diffusion` from p [B,M,K] (softmax of M draws per image) and y [B].

    Returns (L_Brier, L_AC, recoverable [B,M] bool). L_Brier averages ‖p_i − e_y‖² over the recoverable
    draws only (argmax p_i = y); L_AC averages ‖mean of the non-recoverable p_i‖² over the images that
    have at least 2 non-recoverable draws (a single wrong draw has nothing to disagree with). Both are
    0 when no draw qualifies.
    """
    rec = p.detach().argmax(-1) == y[:, None]                             # [B, M]
    onehot = F.one_hot(y, p.shape[-1]).to(p.dtype)[:, None]
    brier = ((p - onehot) ** 2).sum(-1)
    loss_brier = (brier * rec).sum() / rec.sum().clamp_min(1)
    nonrec = (~rec).to(p.dtype)
    n_nonrec = nonrec.sum(1)
    p_nonrec = (p * nonrec[..., None]).sum(1) / n_nonrec.clamp_min(1)[:, None]
    use = (n_nonrec >= 2).to(p.dtype)
    loss_ac = ((p_nonrec ** 2).sum(-1) * use).sum() / use.sum().clamp_min(1)
    return loss_brier, loss_ac, rec


# ---- Salman et al. DnCNN objectives (finetune_diffusion.py --mode dncnn) ----------------------------

def dncnn_mse(denoiser: nn.Module, x: torch.Tensor, sigma: float,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, Metrics]:
    """‖D(x + δ) − x‖² (mean over elements, torch MSELoss), δ ~ N(0, σ²)."""
    loss = F.mse_loss(denoiser(x + sigma * _randn(x, generator)), x)
    return loss, {"mse": loss.detach()}


def dncnn_classification(denoiser: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, Metrics]:
    """CE(f(D(x + δ)), y) with f frozen (the caller puts it in eval mode with no parameter grads)."""
    logits = classifier(denoiser(x + sigma * _randn(x, generator))).float()
    loss = F.cross_entropy(logits, y)
    return loss, {"acc": _acc(logits, y)}


def dncnn_stability(denoiser: nn.Module, classifier: nn.Module, x: torch.Tensor, sigma: float,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, Metrics]:
    """CE(f(D(x + δ)), argmax f(x)) with f frozen: needs no labels (Salman's stability objective)."""
    with torch.no_grad():
        target = classifier(x).argmax(1)
    logits = classifier(denoiser(x + sigma * _randn(x, generator))).float()
    loss = F.cross_entropy(logits, target)
    return loss, {"agree": _acc(logits, target)}
