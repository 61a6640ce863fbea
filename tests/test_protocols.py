"""The protocol table (core/runs/protocols.py): its API, docs/PROTOCOLS.md, and each row's values against what
the reference scripts declare (argparse defaults and constants transcribed from their code)."""
import json
import os

import pytest

from core.errors import MsrsError
from core.runs.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Protocol, get_protocol, protocol_fields, protocols_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (N0, N, skip, batch, alpha) argparse defaults of each reference certify script
REFERENCE_CERTIFY_DEFAULTS = {
    "mdds": (100, 100000, 1, 1000, 0.001),      # smoothing-multiscale certify.py:36-42
    "dds": (100, 100000, 10, 1000, 0.001),      # diffusion_denoised_smoothing cifar10/certify.py:60-64
    "cadis": (100, 100000, 10, 1000, 0.001),    # FT-CADIS certify.py:105-109
    "densepure": (100, 5000, 100, 400, 0.001),  # DensePure eval_certified_densepure.py:435-440
    "cohen": (100, 100000, 1, 1000, 0.001),     # locuslab code/certify.py:17-23
    "salman": (100, 10000, 1, 1000, 0.001),     # denoised-smoothing code/certify.py:17-23
}
REFERENCE_PREDICT_N = {"mdds": 200, "cohen": 100000}   # predict_ddpm.py:41; locuslab code/predict.py:21


def test_api_and_default():
    assert DEFAULT_PROTOCOL == "mdds" and list(PROTOCOLS) == ["mdds", "dds", "cadis", "densepure", "cohen", "salman"]
    assert all(isinstance(p, Protocol) and get_protocol(n) is p for n, p in PROTOCOLS.items())
    with pytest.raises(MsrsError, match="valid: mdds, dds, cadis, densepure, cohen, salman"):
        get_protocol("carlini")
    with pytest.raises(Exception):
        PROTOCOLS["mdds"].precision = "fp32"            # frozen
    d = PROTOCOLS["cadis"].as_dict()
    assert json.loads(json.dumps(d)) == d and set(d) == set(protocol_fields())


def test_docs_table_is_generated():
    with open(os.path.join(ROOT, "docs", "PROTOCOLS.md")) as f:
        assert f.read() == protocols_markdown(), "regenerate docs/PROTOCOLS.md (command at its top)"
    for p in PROTOCOLS.values():
        assert f"`{p.name}`" in protocols_markdown()


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_defaults_are_the_reference_argparse_defaults(name):
    d = PROTOCOLS[name].certify
    assert (d.N0, d.N, d.skip, d.batch, d.alpha) == REFERENCE_CERTIFY_DEFAULTS[name]
    if name in REFERENCE_PREDICT_N:
        assert PROTOCOLS[name].predict_N == REFERENCE_PREDICT_N[name]


def test_rows_pin_the_references():
    P = PROTOCOLS
    # item 5: DDS (DRM.py:59, imagenet/DRM.py:73) and FT-CADIS (architecture.py:121,189) interpolate with
    # antialias=True; MDDS's ResizeLayer is torchvision 0.13.1 Resize on tensors (no antialias), DensePure
    # interpolates without antialias (eval_certified_densepure.py:95)
    assert {n for n, p in P.items() if p.resize_antialias} == {"dds", "cadis"}
    assert all(p.resize_kernel == "bicubic" for p in P.values())
    # item 4: only MDDS reflection-pads ImageNet inputs to 256 (predict_utils.py CropWrapper(model, 256, 224))
    assert {n: p.imagenet_pad_to for n, p in P.items() if p.imagenet_pad_to} == {"mdds": 256}
    assert (P["mdds"].imagenet_transform, P["dds"].imagenet_transform, P["cadis"].imagenet_transform,
            P["densepure"].imagenet_transform) == ("mdds", "resize256", "resize256", "densepure")
    # item 6: FT-CADIS feeds the denoiser's [-1, 1] output to the timm CLIP ViT (architecture.py:185-194)
    assert {n for n, p in P.items() if p.normalization == "half"} == {"cadis"}
    # items 10-11: q_sample in DDS / FT-CADIS; DensePure's exact scale, float/nearest t*, continuous betas
    assert {n for n, p in P.items() if p.noise == "q_sample"} == {"dds", "cadis"}
    assert (P["densepure"].noise, P["densepure"].t_star, P["densepure"].respacing) == ("densepure",) * 3
    assert all(p.t_star == "first" and p.respacing == "discrete" for n, p in P.items() if n != "densepure")
    # item 8: autocast fp16 in MDDS certify/predict (torch.cuda.amp.autocast()); fp32 elsewhere; the
    # guided-diffusion UNet in use_fp16 mode for MDDS (predict_utils.py:241) and DensePure (configs/imagenet.yml)
    assert {n for n, p in P.items() if p.precision == "fp16"} == {"mdds"}
    assert {n for n, p in P.items() if p.unet_fp16} == {"mdds", "densepure"}
    assert not any(p.tf32_matmul for p in P.values())
    assert P["mdds"].train_precision.startswith("fp16") and P["cadis"].train_precision.startswith("fp16")
    # item 7: FT-CADIS one image per class on ImageNet (certify.py:41-43)
    assert {n for n, p in P.items() if p.imagenet_subset == "one_per_class"} == {"cadis"}
    # item 9: Cohen's predict counts an abstention as wrong; MDDS predict_ddpm falls back to the clean argmax
    assert P["cohen"].predict_abstain == "wrong" and P["mdds"].predict_abstain == "clean_fallback"
    assert (P["cohen"].predict_columns, P["mdds"].predict_columns) == ("cohen", "mdds")
    # item 12: MDDS certify.py writes the cascade columns whatever the number of sigmas
    assert {n for n, p in P.items() if p.columns == "mdds"} == {"mdds"}
    # item 13 (pitfall 14): --max checked before --skip only in MDDS certify.py (predict_mdds too)
    assert {n for n, p in P.items() if p.max_order == "max_first"} == {"mdds"}
    assert all(p.predict_max_order == "skip_first" for p in P.values())


def test_denoise_vocabularies_are_the_protocols():
    """core.denoise validates its noise / t* / respacing names itself (the papers' room reads no flags); they are
    the protocol table's names, which the flags offer."""
    from core import denoise
    from core.runs import protocols
    assert set(denoise.NOISES) == set(protocols.NOISES)
    assert set(denoise.T_RULES) == set(protocols.T_STARS)
    assert set(denoise.RESPACINGS) == set(protocols.RESPACINGS)
