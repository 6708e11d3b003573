"""Fixtures of the decode tests: the toy lang dir / model of :mod:`decode_fixtures`."""

from __future__ import annotations

from pathlib import Path

import pytest
from decode_fixtures import ToyLang, ToyModel, make_toy_model, write_toy_lang


@pytest.fixture(scope="session")
def toy_model() -> ToyModel:
    return make_toy_model()


@pytest.fixture(scope="session")
def toy_lang(tmp_path_factory: pytest.TempPathFactory) -> ToyLang:
    return write_toy_lang(tmp_path_factory.mktemp("lang"))


@pytest.fixture(scope="session")
def toy_graph(tmp_path_factory: pytest.TempPathFactory, toy_lang: ToyLang, toy_model: ToyModel) -> Path:
    """A graph dir built with default (Kaldi) scales."""
    from asr_hf.decode.graph import make_graph

    out = tmp_path_factory.mktemp("exp") / "graph"
    make_graph(toy_lang.path, toy_model.tree, toy_model.trans_model, out)
    return out
