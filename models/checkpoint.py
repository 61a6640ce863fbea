"""One checkpoint loader for every model file the toolkit reads.

Checkpoints are pickles: they load with ``weights_only=True`` and a small allow-list of harmless
types (DeepSpeed files carry an ``argparse.Namespace``). ``trust=True`` (``--trust_checkpoint``)
falls back to full unpickling, with a warning naming the file. ``.safetensors`` files (HF and timm
releases) are read with the safetensors library: tensors only, nothing to unpickle.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import struct
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


def require_checkpoint_file(path: str, what: str = "checkpoint") -> str:
    """The one check (and message) for a model file that must exist: `path`, or MsrsError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MsrsError(f"{what} not found: {path} (give the path of an existing .pt/.pth/.safetensors file)")
    return path


def load_checkpoint(path: str, trust: bool = False, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint file safely; raise MsrsError (one line) if missing, corrupt or unsafe."""
    path = require_checkpoint_file(path)
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path, device=str(map_location))
        except (SafetensorError, OSError, ValueError) as e:
            raise MsrsError(f"corrupt or truncated safetensors file {path}: {str(e)[:160]}") from None
    _check_container(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = _reason(e)
        if not _NEEDS_TRUST.search(first):  # a damaged pickle, not one that names a type
            raise MsrsError(f"corrupt checkpoint {path}: {first[:160]}; re-download or re-save it") from None
        if not trust:
            raise MsrsError(
                f"refusing to unpickle {path}: it needs more than plain tensors ({first[:160]}); "
                "pass --trust_checkpoint if you trust this file") from None
        warnings.warn(f"--trust_checkpoint: fully unpickling {path}; this can run code stored in the file")
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e2:  # noqa: BLE001 - report any unpickling failure as a corrupt file
            raise MsrsError(f"corrupt checkpoint {path}: {type(e2).__name__}: {str(e2)[:160]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, UnicodeError, struct.error) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MsrsError(f"corrupt or truncated checkpoint {path}: {msg[:160]}; re-download or re-save it") from None


# torch's weights-only unpickler names the type it refused in these messages (other failures are damage)
_NEEDS_TRUST = re.compile(r"GLOBAL|allowlist|unrecognized function|Can only (build|create)")


def _reason(e: Exception) -> str:
    """The line of an exception that says what is wrong (torch wraps it in paragraphs of advice)."""
    text = str(e)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:Check the documentation|$)", text, re.S)
    lines = [ln.strip() for ln in (m.group(1) if m else text).splitlines() if ln.strip()]
    return " ".join(lines) if m else (lines[0] if lines else type(e).__name__)


def _check_container(path: str) -> None:
    """What torch.load reads is a zip archive (torch >= 1.6) or a legacy pickle; a zip's members must
    pass their CRC-32 (torch writes one per tensor: a flipped bit would otherwise load as a wrong weight)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK", b"\x80")):
        kind = "a text file" if head and all(32 <= c < 127 or c in (9, 10, 13) for c in head) else "unknown bytes"
        raise MsrsError(f"{path} is not a PyTorch checkpoint (it starts like {kind}, not a torch.save zip or "
                        "pickle); give the .pt/.pth file the model was saved to")
    if not zipfile.is_zipfile(path):
        return  # a legacy pickle (no checksums), or a truncated zip that torch.load reports
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0 and info.file_size:
                    continue  # saved without checksums (torch.serialization.set_crc32_options(False))
                with z.open(info) as member:
                    while member.read(1 << 24):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise MsrsError(f"corrupt checkpoint {path}: {_reason(e)[:160]} (a damaged or partly copied file); "
                        "re-download or re-save it") from None


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
