"""Tiny corpora laid out like the LDC releases, written by the tests themselves.

Audio is NIST SPHERE written by libsndfile (uncompressed PCM; the real LDC files
are shorten-compressed, which only the header-level code here can describe);
transcripts follow the release formats:

* Switchboard-1 (LDC97S62): ``swb1_d1/data/sw0NNNN.sph`` (2 channels, 8 kHz) and
  the MS-State ``swb_ms98_transcriptions/NN/NNNN/swNNNN{A,B}-ms98-a-{trans,word}.text``.
* Hub5 eval2000: ``LDC2002S09/hub5e_00/english/en_NNNN.sph`` and
  ``LDC2002T43/reference/english/en_NNNN.txt``.
* 1997 Hub4 BN: ``LDC98S71/97_eng_bns_hub4/<episode>.sph`` (16 kHz mono) and
  ``LDC98T28/hub4e97_trans_980217/transcrp/<episode>.sgml``.
* 1997 Hub4 eval: ``LDC2002S11/hub4e_97/h4e_evl/h4e_97.{sph,stm}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def write_audio(
    path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0, fmt: str = "NIST"
) -> np.ndarray:
    """Write distinct noise per channel; returns the int16 samples, shape ``(frames, channels)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((int(seconds * rate), channels)) * 3000).astype(np.int16)
    sf.write(path, data, rate, format=fmt, subtype="PCM_16")
    return data


def write_shorten_header(path: Path, seconds: float = 2.0, rate: int = 8000, channels: int = 2) -> None:
    """A SPHERE header as in LDC's shorten-compressed files (no real samples follow)."""
    fields = [
        "NIST_1A", "   1024",
        "sample_count -i %d" % int(seconds * rate),
        "sample_n_bytes -i 1",
        "channel_count -i %d" % channels,
        "sample_byte_format -s1 1",
        "sample_rate -i %d" % rate,
        "sample_coding -s26 ulaw,embedded-shorten-v2.00",
        "end_head",
    ]
    head = ("\n".join(fields) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + b" " * (1024 - len(head)) + b"\x00" * 64)


# --------------------------------------------------------------------------- Switchboard

SWBD_TRANSCRIPTS = {
    "sw2001A": [
        ("0001", 0.0, 0.977625, "[silence]"),
        ("0002", 0.977625, 2.5, "hi um yeah i'd like to talk about th[e]- the [laughter-weather]"),
        ("0003", 2.5, 3.2, "[noise] [laughter]"),
        ("0004", 3.2, 4.8, "<b_aside> {yuppiedom} them_1 uh-huh [vocalized-noise] -[a]bout [it'n/isn't] <e_aside>"),
        ("0005", 4.8, 6.0, "[silence]"),
    ],
    "sw2001B": [
        ("0001", 0.0, 1.5, "[silence]"),
        ("0002", 1.5, 3.0, "okay so what do you wear"),
        ("0003", 3.0, 5.95, "i usually wear [vocalized-noise] suits"),
    ],
    "sw2005A": [("0001", 0.5, 2.25, "i've got two kids")],
    "sw2005B": [("0001", 1.0, 2.5, "[laughter] that's nice")],
    "sw2010A": [("0001", 0.0, 1.0, "yeah"), ("0002", 1.0, 2.0, "[noise]")],
    "sw2010B": [("0001", 0.25, 1.75, "right right")],
}
#: Expected normalised texts by Kaldi-style utterance id (train split unless noted).
SWBD_EXPECTED = {
    "sw02001-A_000098-000250": "hi um yeah i'd like to talk about <unk> the weather",
    "sw02001-A_000320-000480": "yuppiedom them uh huh <unk> <unk> it'n",
    "sw02001-B_000150-000300": "okay so what do you wear",
    "sw02001-B_000300-000595": "i usually wear <unk> suits",
    "sw02005-A_000050-000225": "i've got two kids",
    "sw02005-B_000100-000250": "that's nice",
    "sw02010-A_000000-000100": "yeah",
    "sw02010-B_000025-000175": "right right",
}
#: Utterances dropped because their text became empty ([noise] [laughter]; [noise]).
SWBD_DROPPED = {"sw02001-A_000250-000320", "sw02010-A_000100-000200"}
SWBD_SECONDS = {"sw02001": 6.0, "sw02005": 3.0, "sw02010": 2.0}


def make_swbd(root: Path, with_orphan_audio: bool = True) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """Write an LDC97S62-like audio tree and the MS-State transcripts.

    Returns:
        ``(audio_dir, transcripts_dir, samples by recording id)``.
    """
    audio_dir = root / "LDC97S62"
    trans_dir = root / "swb_ms98_transcriptions"
    samples = {}
    for i, (rec, seconds) in enumerate(SWBD_SECONDS.items()):
        disk = "swb1_d1" if i < 2 else "swb1_d2"
        samples[rec] = write_audio(audio_dir / disk / "data" / f"{rec}.sph", seconds, 8000, 2, seed=i)
    if with_orphan_audio:  # LDC97S62 has a few conversations the MS-State set lacks
        write_audio(audio_dir / "swb1_d2" / "data" / "sw02012.sph", 1.0, 8000, 2, seed=9)
    for side, lines in SWBD_TRANSCRIPTS.items():
        num = side[2:6]
        d = trans_dir / num[:2] / num
        d.mkdir(parents=True, exist_ok=True)
        with (d / f"{side}-ms98-a-trans.text").open("w") as f:
            for seg, start, end, words in lines:
                f.write(f"{side}-ms98-a-{seg} {start:.6f} {end:.6f} {words}\n")
        with (d / f"{side}-ms98-a-word.text").open("w") as f:  # present in the release, unused
            for seg, start, end, words in lines:
                f.write(f"{side}-ms98-a-{seg} {start:.6f} {end:.6f} {words.split()[0]}\n")
    return audio_dir, trans_dir, samples


EVAL2000_TXT = """\
#Language: eng
#File id: 4156
#Starting at 0 Ending at 6
# 0 1 #BEGIN
# 5 6 #END

1.17 2.98 A: <contraction e_form="[we=>we]['re=>are]">we're starting the transition, you know %um

1.79 2.43 B: mhm {breath}

3.00 4.50 B: ((what do)) you mean? fr- {laugh} [noise]

4.60 5.00 A: {breath}
"""
EVAL2000_EXPECTED = {
    "en_4156-A_000117-000298": "we're starting the transition you know um",
    "en_4156-B_000179-000243": "mhm",
    "en_4156-B_000300-000450": "what do you mean",
}


def make_eval2000(root: Path) -> tuple[Path, Path]:
    """Write LDC2002S09/LDC2002T43-like trees; returns ``(audio_dir, transcripts_dir)``."""
    audio_dir, trans_dir = root / "LDC2002S09", root / "LDC2002T43"
    write_audio(audio_dir / "hub5e_00" / "english" / "en_4156.sph", 6.0, 8000, 2, seed=5)
    ref = trans_dir / "reference" / "english"
    ref.mkdir(parents=True, exist_ok=True)
    (ref / "en_4156.txt").write_text(EVAL2000_TXT)
    return audio_dir, trans_dir


# --------------------------------------------------------------------------- Broadcast News

BN_SGML = {
    "a960521": """\
<episode filename=a960521.sph program="CNN_Headline_News" air_date="960521:1300" version=4 version_date=970723 language=English scribe=nlw>
<section type=report startTime=0.000 endTime=7.500>
<turn speaker=Lou_Waters spkrtype=male startTime=0.000 endTime=3.500 dialect=native fidelity=high mode=planned>
<time sec=0.000>
{breath} Good evening. I'm Lou Waters, in ((Atlanta)) .
<time sec=2.000>
The ^F_B_I said $5 in 1996 --
</turn>
<turn speaker=Natalie_Allen spkrtype=female startTime=3.500 endTime=7.500>
<overlap startTime=3.500 endTime=4.000>
<time sec=3.500>
Mr. Smith's th- **yuppified** +nucular+ plan
</overlap>
<time sec=5.000>
{lipsmack} [noise]
<time sec=6.000>
<comment> transcriber unsure </comment>
<foreign language=Spanish> hola amigos </foreign> said # she
</turn>
</section>
</episode>
""",
    "j960531d": """\
<episode filename=j960531d program="NPR_ATC" language=English>
<section type=report startTime=0.000 endTime=6.000>
<turn speaker=Bernard_Shaw spkrtype=male startTime=0.000 endTime=2.500>
<time sec=0.000>
Tonight, the senate votes.
</turn>
<background type=music time=2.5 level=low>
<turn speaker=Judy_Woodruff spkrtype=female startTime=2.500 endTime=4.000>
<time sec=2.500>
Thanks, Bernie.
</turn>
<turn speaker=Lou_Waters spkrtype=male startTime=4.000 endTime=6.000>
<time sec=4.000>
And now the weather.
</turn>
</section>
</episode>
""",
}
BN_SECONDS = {"a960521": 8.0, "j960531d": 6.0}
BN_EXPECTED = {
    "a960521_Lou_Waters-00000000-00002000": "good evening i'm lou waters in atlanta",
    "a960521_Lou_Waters-00002000-00003500": "the f b i said five dollars in nineteen ninety six",
    "a960521_Natalie_Allen-00003500-00005000": "mister smith's <unk> yuppified nucular plan",
    "a960521_Natalie_Allen-00006000-00007500": "<unk> said she",
    "j960531d_Bernard_Shaw-00000000-00002500": "tonight the senate votes",
    "j960531d_Judy_Woodruff-00002500-00004000": "thanks bernie",
    "j960531d_Lou_Waters-00004000-00006000": "and now the weather",
}
BN_DROPPED = {"a960521_Natalie_Allen-00005000-00006000"}

EVAL97_STM = """\
;; CATEGORY "0" "" ""
;; LABEL "O" "Overall" "All Segments in the test"
h4e_97 1 excluded_region 0.000 1.000 <o,,unknown> ignore_time_segment_in_scoring
h4e_97 1 Peter_Jennings 1.000 4.000 <o,f0,male> GOOD EVENING (%HESITATION) WE BEGIN (UH) TONIGHT
h4e_97 1 inter_segment_gap 4.000 4.500 <o,,>
h4e_97 1 Elizabeth_Vargas 4.500 8.000 <o,f1,female> THE PRESIDENT'S PLAN WAS- {BREATH} REJECTED
"""
EVAL97_EXPECTED = {
    "h4e_97_Peter_Jennings-00001000-00004000": "good evening we begin uh tonight",
    "h4e_97_Elizabeth_Vargas-00004500-00008000": "the president's plan rejected",
}


def make_bn(root: Path) -> tuple[Path, Path]:
    """Write LDC98S71/LDC98T28-like trees; returns ``(audio_dir, transcripts_dir)``."""
    audio_dir = root / "LDC98S71"
    trans_dir = root / "LDC98T28"
    for i, (ep, seconds) in enumerate(BN_SECONDS.items()):
        write_audio(audio_dir / "97_eng_bns_hub4" / f"{ep}.sph", seconds, 16000, 1, seed=20 + i)
        path = trans_dir / "hub4e97_trans_980217" / "transcrp" / f"{ep}.sgml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BN_SGML[ep], encoding="iso-8859-1")
    return audio_dir, trans_dir


def make_eval97(root: Path) -> Path:
    """Write an LDC2002S11-like tree; returns its root."""
    base = root / "LDC2002S11"
    write_audio(base / "hub4e_97" / "h4e_evl" / "h4e_97.sph", 9.0, 16000, 1, seed=30)
    (base / "hub4e_97" / "h4e_evl" / "h4e_97.stm").write_text(EVAL97_STM)
    return base
