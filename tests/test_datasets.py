"""datasets/: shapes, ranges, labels and errors, on tiny synthetic files in the real on-disk formats."""
import os
import pickle
import re

import numpy as np
import pytest
import torch

import datasets
from core.errors import MsrsError
from datasets import CORRUPTIONS, dataset_info, get_dataset, imagenet_wnids

# ---- digits -------------------------------------------------------------------------------------


def test_digits_shapes_range_split():
    tr, te = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert (len(tr), len(te)) == (1437, 360)
    x, y = te[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey repeated to RGB
    allx = torch.stack([tr[i][0] for i in range(len(tr))])
    assert allx.min() >= 0 and allx.max() <= 1 and allx.max() > 0.9
    # stratified: every class in both splits, ~20% of each in test
    counts = np.bincount([te[i][1] for i in range(len(te))], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38
    info = dataset_info("digits")
    assert (info.num_classes, info.image_size, info.channels, info.class_subset) == (10, 16, 3, None)


def test_digits_deterministic_and_copy():
    a, b = get_dataset("digits", "test"), get_dataset("digits", "test")
    assert [a[i][1] for i in range(50)] == [b[i][1] for i in range(50)]
    x, _ = a[3]
    x.add_(5.0)  # in-place changes by a caller must not leak into the cached tensors
    assert torch.equal(a[3][0], b[3][0]) and a[3][0].max() <= 1
    # the split is disjoint and covers the 1797 images
    from sklearn.datasets import load_digits
    assert len(get_dataset("digits", "train")) + len(a) == len(load_digits().target)


# ---- registry -----------------------------------------------------------------------------------


def test_registry_errors(tmp_path):
    assert set(datasets.DATASETS) == {"digits", "cifar10", "cifar10c", "cifar10.1", "imagenet",
                                      "imagenet-a", "imagenet-r"}
    with pytest.raises(MsrsError, match="valid names: digits"):
        get_dataset("mnist", "test")
    with pytest.raises(MsrsError, match="unknown option"):
        get_dataset("digits", "test", resise=32)
    with pytest.raises(MsrsError, match="splits"):
        get_dataset("digits", "validation")
    assert len(CORRUPTIONS) == 15 and len(set(CORRUPTIONS)) == 15  # the benchmark's (MDDS 'all')


# ---- CIFAR-10 (torchvision pickles) ---------------------------------------------------------------


def _cifar_batch(n, seed):
    rng = np.random.default_rng(seed)
    return {"batch_label": f"batch {seed}", "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img_{seed}_{i}.png" for i in range(n)]}


@pytest.fixture
def cifar_root(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = {f"data_batch_{i}": _cifar_batch(3, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(4, 0)
    batches["batches.meta"] = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                               "horse", "ship", "truck"], "num_cases_per_batch": 10000,
                               "num_vis": 3072}
    for name, obj in batches.items():
        with open(d / name, "wb") as f:
            pickle.dump(obj, f)
    return tmp_path, batches


def test_cifar10(cifar_root):
    root, b = cifar_root
    te = get_dataset("cifar10", "test", str(root))
    tr = get_dataset("cifar10", "train", root)  # PathLike accepted
    assert (len(te), len(tr)) == (4, 15)
    x, y = te[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    # data rows are CHW-flattened uint8: pixel (c,h,w) = data[c*1024 + h*32 + w] / 255
    ref = torch.from_numpy(b["test_batch"]["data"][2].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(x, ref) and y == b["test_batch"]["labels"][2]
    assert tr[14][1] == b["data_batch_5"]["labels"][2]
    xr, _ = get_dataset("cifar10", "test", str(root), resize=48)[0]
    assert xr.shape == (3, 48, 48) and xr.min() >= 0 and xr.max() <= 1
    pickle.loads(pickle.dumps(te))  # DataLoader workers
    with pytest.raises(MsrsError, match="md5"):  # synthetic files are not the official ones
        get_dataset("cifar10", "test", str(root), verify=True)


def test_cifar10_missing(cifar_root, tmp_path):
    root, _ = cifar_root
    with pytest.raises(MsrsError, match=re.escape(str(tmp_path / "nope" / "cifar-10-batches-py"))):
        get_dataset("cifar10", "test", str(tmp_path / "nope"))
    os.remove(root / "cifar-10-batches-py" / "data_batch_4")
    get_dataset("cifar10", "test", str(root))  # the test split does not need it
    with pytest.raises(MsrsError, match=re.escape(str(root / "cifar-10-batches-py" / "data_batch_4"))):
        get_dataset("cifar10", "train", str(root))


# ---- CIFAR-10-C ---------------------------------------------------------------------------------


@pytest.fixture
def cifar10c_root(tmp_path):
    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    n_per = 2  # real files: 10000 per severity
    labels = np.tile(np.array([3, 7], dtype=np.uint8), 5)
    for k, c in enumerate(CORRUPTIONS[:2]):
        a = np.zeros((5 * n_per, 32, 32, 3), np.uint8)
        for r in range(5 * n_per):  # encode (corruption, row) in the pixels
            a[r, ..., 0], a[r, ..., 1] = k * 100, r * 10
        np.save(d / f"{c}.npy", a)
    np.save(d / "labels.npy", labels)
    return tmp_path


def test_cifar10c(cifar10c_root):
    c0, c1 = CORRUPTIONS[:2]
    ds = get_dataset("cifar10c", "test", str(cifar10c_root), corruption=c1, severity=3)
    assert len(ds) == 2
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 7
    assert abs(x[0, 0, 0].item() - 100 / 255) < 1e-6 and abs(x[1, 5, 5].item() - 50 / 255) < 1e-6  # row (3-1)*2+1
    both = get_dataset("cifar10c", "test", str(cifar10c_root), corruption=[c0, c1])
    assert len(both) == 20 and both.segment_of(13) == c1
    x, y = both[13]
    assert abs(x[0, 0, 0].item() - 100 / 255) < 1e-6 and abs(x[1, 0, 0].item() - 30 / 255) < 1e-6 and y == 7
    # MDDS spelling: cifar10c_<corruption>
    assert len(get_dataset(f"cifar10c_{c0}", "test", str(cifar10c_root), severity=[1, 5])) == 4
    pickle.loads(pickle.dumps(both))
    with pytest.raises(MsrsError, match="severity"):
        get_dataset("cifar10c", "test", str(cifar10c_root), corruption=c0, severity=6)
    with pytest.raises(MsrsError, match=re.escape(str(cifar10c_root / "CIFAR-10-C" / f"{CORRUPTIONS[2]}.npy"))):
        get_dataset("cifar10c", "test", str(cifar10c_root))  # default: all 15; only 2 on disk
    os.remove(cifar10c_root / "CIFAR-10-C" / "labels.npy")
    with pytest.raises(MsrsError, match=re.escape(str(cifar10c_root / "CIFAR-10-C" / "labels.npy"))):
        get_dataset("cifar10c", "test", str(cifar10c_root), corruption=c0)


# ---- CIFAR-10.1 ---------------------------------------------------------------------------------


def test_cifar10_1(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 9, 4, 4, 1], dtype=np.int64)
    with pytest.raises(MsrsError, match=re.escape(str(tmp_path / "cifar10.1_v6_data.npy"))):
        get_dataset("cifar10.1", "test", str(tmp_path))
    np.save(tmp_path / "cifar10.1_v6_data.npy", data)
    with pytest.raises(MsrsError, match=re.escape(str(tmp_path / "cifar10.1_v6_labels.npy"))):
        get_dataset("cifar10.1", "test", str(tmp_path))
    np.save(tmp_path / "cifar10.1_v6_labels.npy", labels)
    ds = get_dataset("cifar10.1", "test", str(tmp_path))
    assert len(ds) == 5
    x, y = ds[1]
    assert x.shape == (3, 32, 32) and y == 9 and isinstance(y, int)
    assert torch.equal(x, torch.from_numpy(data[1]).permute(2, 0, 1).float() / 255)  # [0,1], not normalized
    assert dataset_info("cifar10.1").num_classes == 10


# ---- ImageNet, ImageNet-A/R (class folders of images) ---------------------------------------------


def _jpeg(path, size, mode="RGB", seed=0):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_imagenet_val(tmp_path):
    wn = imagenet_wnids()
    assert len(wn) == 1000 and wn == sorted(wn) and wn[0] == "n01440764"
    val = tmp_path / "imagenet" / "val"
    _jpeg(val / wn[1] / "ILSVRC2012_val_00000001.JPEG", (300, 260))
    _jpeg(val / wn[999] / "ILSVRC2012_val_00000002.JPEG", (180, 240), mode="L")  # grey → RGB
    (val / wn[999] / "notes.txt").write_text("not an image")
    ds = get_dataset("imagenet", "test", str(tmp_path))
    assert len(ds) == 2 and [ds[i][1] for i in range(2)] == [1, 999]  # ImageNet-1k indices, not folder order
    for transform in ("default", "resize256", "densepure"):
        x, _ = get_dataset("imagenet", "val", str(tmp_path), transform=transform)[1]
        size = 256 if transform == "densepure" else 224
        assert x.shape == (3, size, size) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    x, _ = get_dataset("imagenet", "val", str(tmp_path), transform="mdds")[1]   # unclamped bicubic (MDDS)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    pickle.loads(pickle.dumps(ds))
    info = dataset_info("imagenet")
    assert (info.num_classes, info.image_size, info.class_subset) == (1000, 224, None)
    with pytest.raises(MsrsError, match=re.escape(str(tmp_path / "x" / "imagenet" / "val"))):
        get_dataset("imagenet", "test", str(tmp_path / "x"))


@pytest.mark.parametrize("name", ["imagenet-a", "imagenet-r"])
def test_imagenet_a_r(tmp_path, name):
    sub = imagenet_wnids(name)
    assert len(sub) == 200 and sub == sorted(sub)
    info = dataset_info(name)
    idx = {w: i for i, w in enumerate(imagenet_wnids())}
    assert info.class_subset == sorted(idx[w] for w in sub) and info.num_classes == 1000
    for k, w in enumerate((sub[0], sub[57], sub[-1])):
        _jpeg(tmp_path / name / w / f"{k}.jpg", (64 + 10 * k, 80), seed=k)
    ds = get_dataset(name, "test", str(tmp_path))
    assert sorted(ds[i][1] for i in range(len(ds))) == [idx[sub[0]], idx[sub[57]], idx[sub[-1]]]
    assert all(ds[i][1] in info.class_subset for i in range(len(ds)))
    x, _ = ds[0]
    assert x.shape == (3, 224, 224) and x.min() >= 0 and x.max() <= 1
    assert len(get_dataset(name.replace("-", "_"), "test", str(tmp_path))) == 3  # MDDS spelling
    other = next(w for w in imagenet_wnids() if w not in sub)
    _jpeg(tmp_path / name / other / "z.jpg", (32, 32))
    with pytest.raises(MsrsError, match="not classes"):
        get_dataset(name, "test", str(tmp_path))
    with pytest.raises(MsrsError, match=re.escape(str(tmp_path / "y" / name))):
        get_dataset(name, "test", str(tmp_path / "y"))


def test_known_subset_indices():
    # spot checks against the published ImageNet-A/R masks (hendrycks' eval code)
    assert dataset_info("imagenet-a").class_subset[:6] == [6, 11, 13, 15, 17, 22]
    assert dataset_info("imagenet-r").class_subset[:6] == [1, 2, 4, 6, 8, 9]
