"""The data-path contract: every corpus, feature and alignment file name in one place.

Stages find each other's outputs only through these functions, so a file name
is spelled once.  Layout::

    <corpus>/manifests/recordings_<split>.jsonl.gz   lhotse manifests (prepared corpora)
    <corpus>/manifests/supervisions_<split>.jsonl.gz
    <corpus>/manifests/cuts_<split>.jsonl.gz         raw-audio cuts, one supervision each
    <corpus>/lm_text.txt                             LM training transcripts

    <feats>/cuts_<split>.jsonl.gz                    feature cuts (data/fbank, data/mfcc)
    <feats>/feats_<split>/                           lilcom feature archives
    <feats>/feats_<split>.lca                        one archive (features imported from Kaldi)
    <feats>/feature_config_<split>.json              extractor settings
    <feats>/skipped_<split>.txt                      cuts too short for one frame
    <feats>/cmvn_<split>.ark, cmvn_<split>.scp       per-speaker CMVN stats (Kaldi layout)

    exp/<sys>/ali/                                   a GMM system's alignment dir, holding
    <ali>/cuts_<split>.jsonl.gz                      feature cuts with ``pdf_ali``
    <ali>/pdf_ali_<split>/                           the frame targets
    <ali>/ali_<split>.npz                            transition-id alignments
    <ali>/pdf_counts_<split>.txt                     frames per pdf
    <ali>/failed_<split>.txt                         utterances not aligned
    <ali>/cmvn_<split>.npz, trans_<split>.npz        CMVN stats, fMLLR transforms used
    <ali>/info.json                                  num_pdfs and per-split summaries

    exp/<sys>/final.mdl [final.mat feature_pipeline.json]   a GMM system
    <graph>/HCLG.fst                                 its decoding graph

Every split-keyed manifest is a ``*_<split>.jsonl.gz`` file; :func:`split_of`
reads the split back from a cuts path.
"""

from __future__ import annotations

import re
from pathlib import Path

from asr_hf.utils.io import Pathlike

#: Suffix of every lhotse manifest the pipeline writes.
MANIFEST_SUFFIX = ".jsonl.gz"
#: Sub-directory of a corpus holding its manifests.
MANIFESTS = "manifests"
#: The corpus splits, in the order stages process them.
SPLITS = ("train", "dev", "test")

_CUTS_NAME = re.compile(r"cuts_([^/]+?)\.jsonl(\.gz)?$")


def manifest_name(kind: str, split: str) -> str:
    """``<kind>_<split>.jsonl.gz`` (kind: ``recordings``, ``supervisions``, ``cuts``)."""
    return f"{kind}_{split}{MANIFEST_SUFFIX}"


def recordings_path(manifest_dir: Pathlike, split: str) -> Path:
    """``manifest_dir/recordings_<split>.jsonl.gz``."""
    return Path(manifest_dir) / manifest_name("recordings", split)


def supervisions_path(manifest_dir: Pathlike, split: str) -> Path:
    """``manifest_dir/supervisions_<split>.jsonl.gz``."""
    return Path(manifest_dir) / manifest_name("supervisions", split)


def recording_splits(manifest_dir: Pathlike) -> list[str]:
    """Splits with a ``recordings_<split>.jsonl.gz`` in ``manifest_dir``, sorted."""
    prefix = "recordings_"
    return sorted(
        p.name[len(prefix) : -len(MANIFEST_SUFFIX)] for p in Path(manifest_dir).glob(f"{prefix}*{MANIFEST_SUFFIX}")
    )


def cuts_file(directory: Pathlike, split: str) -> Path:
    """``directory/cuts_<split>.jsonl.gz``: a feature dir's or an alignment dir's cuts."""
    return Path(directory) / manifest_name("cuts", split)


def manifests_dir(corpus_dir: Pathlike) -> Path:
    """``corpus_dir/manifests``."""
    return Path(corpus_dir) / MANIFESTS


def corpus_cuts_file(corpus_dir: Pathlike, split: str) -> Path:
    """``corpus_dir/manifests/cuts_<split>.jsonl.gz``: a corpus's raw-audio cuts."""
    return cuts_file(manifests_dir(corpus_dir), split)


def lm_text_path(corpus_dir: Pathlike) -> Path:
    """``corpus_dir/lm_text.txt``: the LM training transcripts."""
    return Path(corpus_dir) / "lm_text.txt"


def split_of(path: Pathlike) -> str:
    """The split of a cuts manifest path (the inverse of :func:`cuts_file`).

    ``.../cuts_sp0.9.jsonl.gz`` -> ``sp0.9``; any other name gives its part before
    the first dot without a ``cuts_`` prefix (``dev.jsonl`` -> ``dev``).
    """
    m = _CUTS_NAME.search(str(path))
    if m:
        return m.group(1)
    name = Path(path).name.split(".")[0]
    return name[len("cuts_") :] if name.startswith("cuts_") else name


# --- feature directories -------------------------------------------------------


def feature_storage_dir(feats_dir: Pathlike, split: str) -> Path:
    """``feats_dir/feats_<split>``: the split's feature archives."""
    return Path(feats_dir) / f"feats_{split}"


def feature_archive_path(feats_dir: Pathlike, split: str) -> Path:
    """``feats_dir/feats_<split>.lca``: one lilcom archive (features imported from Kaldi)."""
    return Path(feats_dir) / f"feats_{split}.lca"


def feature_config_path(feats_dir: Pathlike, split: str) -> Path:
    """``feats_dir/feature_config_<split>.json``."""
    return Path(feats_dir) / f"feature_config_{split}.json"


def skipped_path(feats_dir: Pathlike, split: str) -> Path:
    """``feats_dir/skipped_<split>.txt``: cuts dropped by feature extraction."""
    return Path(feats_dir) / f"skipped_{split}.txt"


def cmvn_ark_path(feats_dir: Pathlike, split: str) -> Path:
    """``feats_dir/cmvn_<split>.ark``: per-speaker CMVN stats, Kaldi layout."""
    return Path(feats_dir) / f"cmvn_{split}.ark"


def cmvn_scp_path(feats_dir: Pathlike, split: str) -> Path:
    """``feats_dir/cmvn_<split>.scp``: the index of :func:`cmvn_ark_path`."""
    return Path(feats_dir) / f"cmvn_{split}.scp"


# --- alignment directories -----------------------------------------------------


def system_ali_dir(exp_dir: Pathlike) -> Path:
    """``exp_dir/ali``: where a GMM system writes (and the next system reads) its alignments."""
    return Path(exp_dir) / "ali"


def pdf_ali_dir(ali_dir: Pathlike, split: str) -> Path:
    """``ali_dir/pdf_ali_<split>``: the frame targets' arrays."""
    return Path(ali_dir) / f"pdf_ali_{split}"


def tid_ali_path(ali_dir: Pathlike, split: str) -> Path:
    """``ali_dir/ali_<split>.npz``: transition-id alignments."""
    return Path(ali_dir) / f"ali_{split}.npz"


def pdf_counts_path(ali_dir: Pathlike, split: str) -> Path:
    """``ali_dir/pdf_counts_<split>.txt``: frames per pdf."""
    return Path(ali_dir) / f"pdf_counts_{split}.txt"


def failed_path(ali_dir: Pathlike, split: str) -> Path:
    """``ali_dir/failed_<split>.txt``: utterances that could not be aligned."""
    return Path(ali_dir) / f"failed_{split}.txt"


def ali_cmvn_path(ali_dir: Pathlike, split: str) -> Path:
    """``ali_dir/cmvn_<split>.npz``: the CMVN stats the alignment used."""
    return Path(ali_dir) / f"cmvn_{split}.npz"


def ali_transforms_path(ali_dir: Pathlike, split: str) -> Path:
    """``ali_dir/trans_<split>.npz``: the fMLLR transforms the alignment used (SAT)."""
    return Path(ali_dir) / f"trans_{split}.npz"


def ali_info_path(ali_dir: Pathlike) -> Path:
    """``ali_dir/info.json``: ``num_pdfs`` and per-split summaries."""
    return Path(ali_dir) / "info.json"


# --- systems -------------------------------------------------------------------

GRAPH_FST = "HCLG.fst"


def graph_fst(graph_dir: Pathlike) -> Path:
    """``graph_dir/HCLG.fst``: the decoding graph."""
    return Path(graph_dir) / GRAPH_FST


#: The files of a GMM system dir that its outputs (decodes, dumped features) are a function of.
SYSTEM_FILES = ("final.mdl", "final.mat", "feature_pipeline.json")


def system_files(exp_dir: Pathlike) -> list[Path]:
    """The :data:`SYSTEM_FILES` that ``exp_dir`` holds (``final.mat`` and the pipeline record
    belong to LDA+MLLT / SAT systems only)."""
    return [Path(exp_dir) / name for name in SYSTEM_FILES if (Path(exp_dir) / name).is_file()]


__all__ = [
    "MANIFEST_SUFFIX",
    "MANIFESTS",
    "SPLITS",
    "manifest_name",
    "recordings_path",
    "supervisions_path",
    "recording_splits",
    "cuts_file",
    "manifests_dir",
    "corpus_cuts_file",
    "lm_text_path",
    "split_of",
    "feature_storage_dir",
    "feature_archive_path",
    "feature_config_path",
    "skipped_path",
    "cmvn_ark_path",
    "cmvn_scp_path",
    "system_ali_dir",
    "pdf_ali_dir",
    "tid_ali_path",
    "pdf_counts_path",
    "failed_path",
    "ali_cmvn_path",
    "ali_transforms_path",
    "ali_info_path",
    "GRAPH_FST",
    "graph_fst",
    "SYSTEM_FILES",
    "system_files",
]
