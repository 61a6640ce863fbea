"""Dataset side of the papers' protocols (issue 12 items 1-3 and FT-CADIS's subset), each pinned on tiny
files in the real on-disk formats against a transcription of the reference code."""
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.errors import MsrsError
from datasets import (CORRUPTION_GROUPS, CORRUPTIONS, EXTRA_CORRUPTIONS, class_subset, dataset_info, get_dataset,
                      imagenet_wnids, one_per_class, resolve_corruptions)
from datasets.imagenet import imagenet_transform

# smoothing-multiscale predict_utils.py CORRUPTIONS / CORRUPTIONS_PER_TYPE, in their order
MDDS_CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
                    "jpeg_compression"]
MDDS_GROUPS = {"noise": MDDS_CORRUPTIONS[:3], "blur": MDDS_CORRUPTIONS[3:7], "weather": MDDS_CORRUPTIONS[7:11],
               "digital": MDDS_CORRUPTIONS[11:]}


def mdds_corr_types(corr_type):
    """Transcription of predict_ddpm.py / predict_mdds.py __main__: --corr_type → corruption list."""
    corruptions = []
    for ct in corr_type.split(","):
        if ct == "all":
            corruptions = MDDS_CORRUPTIONS
            break
        corruptions += MDDS_GROUPS[ct]
    return corruptions


# ---- item 1: CIFAR-10-C ---------------------------------------------------------------------------

def test_corruption_list_and_groups():
    assert CORRUPTIONS == MDDS_CORRUPTIONS and CORRUPTION_GROUPS == MDDS_GROUPS
    assert len(EXTRA_CORRUPTIONS) == 4 and not set(EXTRA_CORRUPTIONS) & set(CORRUPTIONS)
    for spec in ("all", "noise", "blur", "weather", "digital", "noise,digital", "digital,blur", "weather,all"):
        assert resolve_corruptions(spec) == mdds_corr_types(spec), spec
    assert resolve_corruptions(None) == MDDS_CORRUPTIONS
    assert resolve_corruptions("fog,saturate,fog") == ["fog", "saturate"]     # names (extras too), deduplicated
    with pytest.raises(MsrsError, match="unknown CIFAR-10-C corruption 'fogg'"):
        resolve_corruptions("noise,fogg")


@pytest.fixture
def c10c(tmp_path):
    """CIFAR-10-C layout: {corruption}.npy uint8 [5n,32,32,3] (severity s = rows (s-1)n:sn) + labels.npy."""
    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    n = 2
    rng = np.random.default_rng(0)
    for c in CORRUPTIONS + EXTRA_CORRUPTIONS:
        np.save(d / f"{c}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    np.save(d / "labels.npy", rng.integers(0, 10, 5 * n).astype(np.uint8))
    return tmp_path


def test_cifar10c_reads_whole_files_like_mdds(c10c):
    """MDDS load_cifar10c: ds.data = np.load(f'{corruption}.npy') (all 50,000 rows, severities 1..5 in file
    order), targets = labels.npy, then ToTensor; our default (severity None / 'all') is that, row for row."""
    for corruption in ("fog", "gaussian_noise"):
        ref_x = np.load(c10c / "CIFAR-10-C" / f"{corruption}.npy")
        ref_y = np.load(c10c / "CIFAR-10-C" / "labels.npy")
        for sev in (None, "all"):
            ds = get_dataset("cifar10c", "test", str(c10c), corruption=corruption, severity=sev)
            assert len(ds) == len(ref_x) == 10
            for i in range(len(ds)):
                x, y = ds[i]
                assert y == int(ref_y[i])
                assert torch.equal(x, torch.from_numpy(ref_x[i]).permute(2, 0, 1).float() / 255)
    ds = get_dataset("cifar10c", "test", str(c10c))                  # all 15, each whole
    assert len(ds) == 15 * 10 and [ds.segment_of(10 * k) for k in range(15)] == MDDS_CORRUPTIONS
    assert len(get_dataset("cifar10c", "test", str(c10c), corruption="blur", severity=5)) == 4 * 2
    assert len(get_dataset("cifar10c", "test", str(c10c), corruption="spatter")) == 10


# ---- items 2-3: ImageNet / ImageNet-A/R preprocessing and labels -----------------------------------

def _photo(path, size, seed):
    """A smooth image with sharp edges (what bicubic overshoot and antialiasing act on), saved as JPEG."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = 127 + 80 * np.sin(xx / 7.0 + seed)[..., None] * np.cos(yy / 11.0)[..., None] + rng.normal(0, 5, (h, w, 3))
    img[(xx // 16 + yy // 16) % 2 == 0] = 250          # a checkerboard of hard edges
    img[:, : w // 8] = 5
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)


def mdds_torchvision_0131(img):
    """Transcription of MDDS get_dataset's transform under torchvision 0.13.1 (its environments.sh):
    ToTensor; Resize(224, interpolation=3) on a float tensor: F_t.resize → interpolate(bicubic,
    align_corners=False), antialias None → False, clamp only for uint8; CenterCrop(224) with
    int(round((h - 224) / 2)) offsets. (Normalize(.5, .5) is the classifier's job here.)"""
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    h, w = x.shape[1:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = 224, int(224 * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    x = F.interpolate(x[None], size=[new_h, new_w], mode="bicubic", align_corners=False)[0]
    top, left = int(round((new_h - 224) / 2.0)), int(round((new_w - 224) / 2.0))
    return x[:, top:top + 224, left:left + 224]


@pytest.mark.parametrize("size", [(300, 260), (500, 375), (180, 240)])
def test_mdds_imagenet_transform_is_torchvision_0131(tmp_path, size):
    _photo(tmp_path / "a.jpg", size, seed=size[0])
    img = Image.open(tmp_path / "a.jpg").convert("RGB")
    ours = imagenet_transform("mdds")(img)
    ref = mdds_torchvision_0131(img)
    assert torch.equal(ours, ref)
    # what we did before (today's torchvision default antialias, then a clamp) is measurably different
    from torchvision import transforms as T
    old = T.Compose([T.ToTensor(), T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                     T.CenterCrop(224)])(img).clamp(0, 1)
    assert (old - ref).abs().max() > 0.05
    if size[0] > 224 and size[1] > 224:                  # downscaling: overshoot is left as MDDS leaves it
        assert ref.min() < 0 or ref.max() > 1
    # today's torchvision with antialias=False agrees on float tensors (cross-check of the transcription)
    tv = T.Compose([T.ToTensor(), T.Resize(224, interpolation=T.InterpolationMode.BICUBIC, antialias=False),
                    T.CenterCrop(224)])(img)
    torch.testing.assert_close(tv, ref, atol=1e-6, rtol=0)


def test_tensor_resize_no_aa_identity_and_repr():
    resize = imagenet_transform("mdds").transforms[1]
    x = torch.rand(3, 224, 300)
    assert resize(x) is x                                # shorter side already 224: returned as is
    assert "224" in repr(resize)
    with pytest.raises(MsrsError, match="resize256, mdds, densepure"):
        imagenet_transform("bilinear")


def test_densepure_imagenet_transform(tmp_path):
    """DensePure datasets.py _imagenet('test'): Resize(256, interpolation=3) + CenterCrop(256) + ToTensor (PIL)."""
    from torchvision import transforms as T
    _photo(tmp_path / "a.jpg", (400, 300), seed=1)
    img = Image.open(tmp_path / "a.jpg").convert("RGB")
    w, h = img.size
    r = img.resize((int(256 * w / h), 256), Image.BICUBIC)                 # shorter side 256, PIL bicubic
    left = int(round((r.size[0] - 256) / 2.0))
    ref = T.functional.to_tensor(r.crop((left, 0, left + 256, 256)))
    assert torch.equal(imagenet_transform("densepure")(img), ref)


@pytest.mark.parametrize("name", ["imagenet-a", "imagenet-r"])
def test_imagenet_a_r_labels_like_mdds(tmp_path, name):
    """MDDS: ImageFolder(data_path/imagenet-a, transform) over the 200 folders → labels 0..199 in sorted-wnid
    order; LogitMaskingLayer keeps the sorted 1k indices of the 200, so logit j is class j. labels='subset'
    gives the same labels, the mdds transform applies to A/R too."""
    from torchvision.datasets import ImageFolder
    sub = imagenet_wnids(name)
    root = tmp_path / name
    for k, w in enumerate(sub):                         # every class present, as in the real release
        (root / w).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), k % 256, np.uint8)).save(root / w / f"{k}.jpg")
    ref = ImageFolder(str(root))
    ds = get_dataset(name, "test", str(tmp_path), labels="subset", transform="mdds")
    assert [t for _, t in ds.samples] == ref.targets and sorted(set(ref.targets)) == list(range(200))
    one_k = {w: i for i, w in enumerate(imagenet_wnids())}
    assert all(class_subset(name)[ref.class_to_idx[w]] == one_k[w] for w in sub)
    assert dataset_info(name).class_subset == class_subset(name)
    x, y = ds[57]
    assert x.shape == (3, 224, 224) and y == ref.targets[57]
    assert get_dataset(name, "test", str(tmp_path)).targets[57] == one_k[sub[ref.targets[57]]]   # default: 1k
    with pytest.raises(MsrsError, match="labels must be"):
        get_dataset(name, "test", str(tmp_path), labels="wnid")


# ---- FT-CADIS ImageNet subset ------------------------------------------------------------------------

def ftcadis_sample_1_per_class(values_list, seed=0):
    """Transcription of FT-CADIS: utils.fix_random_seeds(seed) (random.seed first) then
    utils.sample_1_per_class_imagenet on the global random module."""
    random.seed(seed)
    class_groups = [[] for _ in range(1000)]
    for i, value in enumerate(values_list):
        class_groups[value].append(i)
    sampled = []
    for group in class_groups:
        random.shuffle(group)
        sampled.extend(group[:1])
    return sampled


@pytest.mark.parametrize("seed", [0, 3])
def test_one_per_class_is_ftcadis(seed):
    rng = np.random.default_rng(1)
    targets = np.sort(rng.integers(0, 1000, 5000)).tolist()       # ImageFolder order: sorted by class
    state = random.getstate()
    try:
        ref = ftcadis_sample_1_per_class(targets, seed)
    finally:
        random.setstate(state)
    before = random.getstate()
    assert one_per_class(targets, 1000, seed) == ref
    assert random.getstate() == before                             # our copy never touches the global RNG
    assert len(ref) == len(set(targets)) and all(targets[i] == c for i, c in zip(ref, sorted(set(targets))))
