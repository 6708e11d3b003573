"""Real-corpus preparation: 1997 Hub4 English Broadcast News and Switchboard-1.

Both preparations end in the same place: lhotse manifests
``recordings_<split>.jsonl.gz`` / ``supervisions_<split>.jsonl.gz`` for the
splits ``train``, ``dev`` and (when there is one) ``test``, every transcript in
the project's normalised form (:func:`asr_hf.data.text.normalize_text`), written
atomically as one directory with a ``.done`` marker.

Transcript markup is cleaned per corpus *before* ``normalize_text``; the one
token that survives normalisation is ``<unk>`` (the OOV word, pronounced SPN),
which stands for speech that has no lexicon word: vocalized noise, word
fragments in training transcripts, foreign speech.  Non-speech noises
(``[noise]``, ``[laughter]``, ``{breath}`` ...) are dropped.  Utterances whose
transcript becomes empty are dropped and counted.

Modules: :mod:`~asr_hf.data.ldc.common` (the OOV word, :class:`Fragments`, the
split builder, :func:`write_manifests`), :mod:`~asr_hf.data.ldc.swb`
(Switchboard-1 and eval2000), :mod:`~asr_hf.data.ldc.bn` (1997 Hub4 and
eval97), :mod:`~asr_hf.data.ldc.sgml` (the SGML and STM readers).  Everything
public is re-exported here.

lhotse's readers of SPHERE files need the ``sph2pipe`` binary (LDC's files are
shorten-compressed); recordings here are described from the SPHERE header, so
preparation itself needs no decoder.
"""

from asr_hf.data.ldc.bn import clean_bn_text, clean_stm_text, prepare_bn
from asr_hf.data.ldc.common import UNK, Fragments, PreparedCorpus, normalize_with_unk, write_manifests
from asr_hf.data.ldc.sgml import BnEpisode, BnSegment, StmSegment, parse_bn_sgml, parse_stm
from asr_hf.data.ldc.swb import clean_cts_reference, clean_swbd_text, clean_swbd_token, prepare_swbd

__all__ = [
    "UNK",
    "Fragments",
    "PreparedCorpus",
    "prepare_bn",
    "prepare_swbd",
    "write_manifests",
    "normalize_with_unk",
    "clean_swbd_token",
    "clean_swbd_text",
    "clean_cts_reference",
    "clean_bn_text",
    "clean_stm_text",
    "parse_bn_sgml",
    "parse_stm",
    "BnEpisode",
    "BnSegment",
    "StmSegment",
]
