"""One checkpoint loader for every model file the toolkit reads.

Checkpoints are pickles: they load with ``weights_only=True`` and a small allow-list of harmless
types (DeepSpeed files carry an ``argparse.Namespace``). ``trust=True`` (``--trust_checkpoint``)
falls back to full unpickling, with a warning naming the file.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from typing import Any, Mapping

import torch

from core.errors import MsrsError

# Types found inside the reference checkpoints that are plain data.
SAFE_GLOBALS = [argparse.Namespace, OrderedDict]

PREFIXES = ("module.", "_orig_mod.", "model.")
ZOO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zoo")


def resolve_zoo(spec: str) -> str:
    """``zoo:NAME`` → models/zoo/NAME.pt (the shipped models; it must exist); anything else as given."""
    spec = os.fspath(spec)
    if not spec.startswith("zoo:"):
        return spec
    name = spec[len("zoo:"):]
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise MsrsError(f"bad zoo name {name!r}: use zoo:NAME with NAME a file stem under {ZOO_DIR}")
    path = os.path.join(ZOO_DIR, f"{name}.pt")
    if not os.path.isfile(path):
        raise MsrsError(f"zoo model {name!r} not found at {path}; run scripts/train_zoo.sh to build it")
    return path


def load_checkpoint(path: str, trust: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint file safely; raise MsrsError (one line) if missing, corrupt or unsafe."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MsrsError(f"checkpoint not found: {path} (give the path of an existing .pt/.pth file)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust:
            first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported type"
            raise MsrsError(
                f"refusing to unpickle {path}: it needs more than plain tensors ({first[:160]}); "
                "pass --trust_checkpoint if you trust this file") from None
        warnings.warn(f"--trust_checkpoint: fully unpickling {path}; this can run code stored in the file")
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e2:  # noqa: BLE001 - report any unpickling failure as a corrupt file
            raise MsrsError(f"corrupt checkpoint {path}: {type(e2).__name__}: {str(e2)[:160]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MsrsError(f"corrupt or truncated checkpoint {path}: {msg[:160]}; re-download or re-save it") from None


def strip_prefixes(state_dict: Mapping[str, torch.Tensor], prefixes=PREFIXES) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DDP ``module.``, ``torch.compile`` ``_orig_mod.``) when every key has them."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict_strict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str,
                           allow_missing: frozenset[str] | set[str] = frozenset()) -> None:
    """Load strictly; on any mismatch raise one line naming the file and the first mismatching key.

    ``allow_missing`` names the exact keys that may be absent (e.g. an unused buffer); nothing else may.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and k not in allow_missing]
    unexpected = [k for k in state_dict if k not in own]
    if missing:
        raise MsrsError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing; "
                        f"{len(unexpected)} unexpected) - is this the right checkpoint/config?")
    if unexpected:
        raise MsrsError(f"{path}: unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected) "
                        "- is this the right checkpoint/config?")
    for k, v in state_dict.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise MsrsError(f"{path}: shape mismatch at '{k}': file {tuple(v.shape)} vs model "
                            f"{tuple(own[k].shape)} - is this the right checkpoint/config?")
    model.load_state_dict(state_dict, strict=not allow_missing)


def save_checkpoint(obj: Mapping[str, Any], path: str) -> None:
    """Write atomically (temp file + rename) so a kill never leaves a half-written checkpoint."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(dict(obj), tmp)
    os.replace(tmp, path)
