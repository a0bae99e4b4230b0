"""The build of the compiled call path this environment has (``make test`` builds it first):
when it matches the sources, every module of it is loaded compiled, from the build."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
from pathlib import Path

import pytest

from tierfaas import native


def test_the_built_call_path_is_the_one_loaded() -> None:
    if native.disabled(os.environ.get(native.ENV)):
        pytest.skip(f"{native.ENV} turns it off")
    if not (native.native_dir() / native.MANIFEST).is_file():
        pytest.skip("not built here (no C compiler or Python headers): the sources run")
    assert native.STATE.active, native.STATE.describe()
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    for module in native.HOT_MODULES:
        loaded = Path(importlib.import_module(module).__file__ or "")
        assert loaded.name.endswith(suffix), (module, loaded)
        assert loaded.is_relative_to(native.native_dir()), (module, loaded)
