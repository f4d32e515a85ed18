"""Every backend's converter takes the canonical tree and gives it back exact, and refuses an
invalid one by its path. (Each backend's own names are tested in its folder.)"""

from __future__ import annotations

import numpy as np
import pytest

from shared import params
from shared.backend import backend_names, get_backend
from tests.support.converters import CONFIG


@pytest.fixture(params=backend_names())
def backend(request):
    return get_backend(request.param)


def test_canonical_to_backend_to_canonical_is_bitwise_exact(backend, canonical):
    back = backend.to_canonical(backend.from_canonical(canonical, CONFIG), CONFIG)
    flat, flat_back = params.flatten(canonical), params.flatten(back)
    assert flat.keys() == flat_back.keys()
    for path in flat:
        assert flat_back[path].dtype == flat[path].dtype
        np.testing.assert_array_equal(flat[path], flat_back[path])


def test_an_invalid_canonical_tree_is_rejected_with_its_path(backend, canonical):
    broken = {**canonical, "ln_f": {**canonical["ln_f"], "g": canonical["ln_f"]["g"][:2]}}
    with pytest.raises(ValueError, match="'ln_f/g' has shape"):
        backend.from_canonical(broken, CONFIG)
