"""The tiny corpus as a recipe dir with learnable stand-in targets.

The targets are a fixed function of the features (argmax of a random projection
of the normalised frame), so a network can learn them; the real GMM alignments
are exercised by the recipe smoke test.
"""

import pytest
import torch
from lhotse import CutSet

from asr_hf.gmm.targets import attach_pdf_alignments

NUM_PDFS = 6


@pytest.fixture(scope="module")
def recipe_root(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    (root / "data").mkdir()
    (root / "data" / "fbank").symlink_to(tiny_corpus.fbank_cuts("train").parent)
    cuts = CutSet.from_file(tiny_corpus.fbank_cuts("train"))
    proj = torch.Generator().manual_seed(0)
    w = torch.randn(40, NUM_PDFS, generator=proj)
    alis = {}
    for c in cuts:
        f = torch.from_numpy(c.load_features())
        f = (f - f.mean(0)) / (f.std(0) + 1e-5)
        alis[c.id] = (f @ w).argmax(-1).numpy()
    attach_pdf_alignments(list(cuts), alis, root / "exp" / "tri1" / "ali", "train", NUM_PDFS)
    return root


@pytest.fixture(scope="session")
def num_pdfs():
    """Number of stand-in pdf classes in ``recipe_root``'s alignments."""
    return NUM_PDFS
