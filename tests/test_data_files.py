"""The test data in tests/data is byte-identical to the files its README.md names.

Every tokenizer, data and conformance test reads these files; a truncated download, a
line-ending conversion or an edit would otherwise show up as puzzling failures far away.
"""

import hashlib

import pytest

from tests.support.paths import BPE_DIR, DATA_DIR, TINY_SHAKESPEARE

SHA256 = {
    BPE_DIR / "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    BPE_DIR / "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    TINY_SHAKESPEARE: "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
}


@pytest.mark.parametrize("path", list(SHA256), ids=lambda p: str(p.relative_to(DATA_DIR)))
def test_data_file_has_its_published_sha256(path):
    assert path.is_file(), f"{path} is missing: tests/data/README.md says where it comes from"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == SHA256[path], (
        f"{path} is not the published file (sha256 {digest}); restore it from git or from the "
        "source tests/data/README.md names"
    )


def test_readme_lists_the_same_digests():
    readme = (DATA_DIR / "README.md").read_text()
    for path, digest in SHA256.items():
        assert digest in readme, f"tests/data/README.md does not list {path.name}'s sha256"
