"""A clone of msrs stands on its own: no file of the project refers to the founders' ``shared`` folder
beside the checkout, and every vendored data folder says where its files came from (and checks them)."""
import hashlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", "out", "build"}
# spelled in pieces so that this file does not match itself
_S = "sha" + "red"
FORBIDDEN = ("../" + _S, f'"{_S}" /', f"'{_S}' /")
DATA_DIRS = ["tests/fixtures/unet", "tests/fixtures/dds", "tests/data/reference_results"]


def project_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            yield Path(dirpath) / name


def test_no_file_refers_to_shared():
    offenders = []
    for path in project_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary data (checkpoints, figures)
        for needle in FORBIDDEN:
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle!r}")
    assert not offenders, "files refer to a folder a user's clone does not have:\n" + "\n".join(offenders)


def test_the_check_catches_a_reference(tmp_path):
    """The scan above is not vacuous: a file with such a path is reported."""
    bad = tmp_path / "x.py"
    bad.write_text(f'FIX = Path(__file__).parents[2] / "{_S}" / "fixtures"\n')
    assert any(n in bad.read_text() for n in FORBIDDEN)


@pytest.mark.parametrize("folder", DATA_DIRS)
def test_vendored_data_has_provenance_and_checksums(folder):
    d = ROOT / folder
    readme = (d / "README.md").read_text()
    assert "Provenance" in readme and "Licence" in readme
    sums = (d / "SHA256SUMS").read_text().split("\n")
    listed = set()
    for line in filter(None, sums):
        digest, name = line.split(maxsplit=1)
        listed.add(name)
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == digest, f"{folder}/{name} changed"
    on_disk = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file() and p.name not in ("README.md", "SHA256SUMS")}
    assert on_disk == listed, f"{folder}: files without a checksum line: {sorted(on_disk - listed)}"
