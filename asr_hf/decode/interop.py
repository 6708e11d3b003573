"""Kaldi interop for decoding: per-utterance score matrices as ark/scp (kaldi-io).

:func:`write_matrices` exports the ``(T, num_pdfs)`` log-likelihoods (or, with
priors, the hybrid pseudo log-likelihoods) that :mod:`asr_hf.decode.decoder`
consumes, so a Kaldi user can decode them with the same graph and model::

    latgen-faster-mapped --acoustic-scale=0.1 --beam=13 --lattice-beam=8 \\
        --max-active=7000 --allow-partial=true --word-symbol-table=exp/tri1/graph/words.txt \\
        exp/tri1/final.mdl exp/tri1/graph/HCLG.fst scp:loglikes.scp "ark:|gzip -c > lat.1.gz"

(``latgen-faster-mapped`` applies the acoustic scale and maps pdfs to
transition-ids itself, so the matrices are written unscaled at pdf level,
exactly what Kaldi's ``nnet-forward --class-frame-counts`` pipes into it.)
:func:`read_matrices` reads Kaldi's ark/scp matrices back (e.g. ``nnet-forward``
output) for :func:`asr_hf.decode.decoder.decode_hypotheses`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np

from asr_hf.decode.decoder import DecodeConfig, pseudo_loglikes
from asr_hf.utils.errors import DataError
from asr_hf.utils.io import Pathlike, atomic_output


def write_matrices(
    items: Iterable[tuple[str, np.ndarray]],
    ark: Pathlike,
    scp: Optional[Pathlike] = None,
    log_priors: Optional[np.ndarray] = None,
    prior_scale: float = 1.0,
) -> int:
    """Write ``(utt_id, (T, num_pdfs) matrix)`` items as a binary float32 Kaldi ark (+ scp).

    Args:
        items: utterance id -> log-likelihoods (or log-posteriors with ``log_priors``).
        ark: the archive to write (atomically).
        scp: optional script file with ``utt ark:offset`` lines.
        log_priors: ``(num_pdfs,)``; when given, write ``log_post - prior_scale * log_priors``.
        prior_scale: see ``log_priors``.

    Returns:
        The number of matrices written.
    """
    from asr_hf.utils.kio import kaldi_io

    ark = Path(ark)
    n = 0
    with contextlib.ExitStack() as stack:  # unwinds LIFO: files close before the renames
        tmp_ark = stack.enter_context(atomic_output(ark))
        tmp_scp = stack.enter_context(atomic_output(scp)) if scp is not None else None
        f = stack.enter_context(open(tmp_ark, "wb"))
        s = stack.enter_context(open(tmp_scp, "w")) if tmp_scp is not None else None
        for utt_id, mat in items:
            if not utt_id or any(c.isspace() for c in utt_id):
                raise DataError(repr(utt_id), "utterance id is not a valid Kaldi key")
            mat = np.asarray(mat, dtype=np.float32)
            if mat.ndim != 2:
                raise DataError(utt_id, f"expected a (T, num_pdfs) matrix, got shape {mat.shape}")
            if log_priors is not None:
                mat = pseudo_loglikes(mat, log_priors, prior_scale)
            f.write(f"{utt_id} ".encode())
            offset = f.tell()
            kaldi_io.write_mat(f, np.ascontiguousarray(mat))
            if s is not None:
                s.write(f"{utt_id} {ark}:{offset}\n")
            n += 1
    return n


def read_matrices(spec: Pathlike) -> Iterator[tuple[str, np.ndarray]]:
    """Read matrices from a Kaldi ark or scp (``x.ark``, ``x.scp``, ``ark:x``, ``scp:x``).

    Yields:
        ``(utt_id, float32 matrix)`` in file order.
    """
    from asr_hf.utils.kio import kaldi_io

    s = str(spec)
    kind = None
    if s.startswith(("ark:", "scp:")):
        kind, s = s[:3], s[4:]
    elif s.endswith(".scp"):
        kind = "scp"
    else:
        kind = "ark"
    if not Path(s).is_file():
        raise DataError(s, "no such file")
    reader = kaldi_io.read_mat_scp if kind == "scp" else kaldi_io.read_mat_ark
    for key, mat in reader(s):
        yield key, np.asarray(mat, dtype=np.float32)


def latgen_command(
    graph_dir: Pathlike, model: Pathlike, matrices_scp: Pathlike, config: Optional[DecodeConfig] = None
) -> str:
    """The Kaldi command line that decodes exported matrices with the same settings."""
    c = config or DecodeConfig()
    g = Path(graph_dir)
    return (
        f"latgen-faster-mapped --acoustic-scale={c.acwt:g} --beam={c.beam:g} --lattice-beam={c.lattice_beam:g} "
        f"--max-active={c.max_active} --min-active={c.min_active} "
        f"--allow-partial={'true' if c.allow_partial else 'false'} "
        f"--word-symbol-table={g / 'words.txt'} {model} {g / 'HCLG.fst'} scp:{matrices_scp} "
        f"'ark:|gzip -c > lat.gz'"
    )
