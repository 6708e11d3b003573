import pytest

from asr_hf.lang.lexicon import CMU_PHONES, SPN, Lexicon, load_cmudict
from asr_hf.utils.errors import DataError


def test_cmudict_stress_removed_39_phones():
    cmu = load_cmudict()
    assert cmu["hello"][0] == ("HH", "AH", "L", "OW")
    phones = {p for prons in cmu.values() for pron in prons for p in pron}
    assert phones == set(CMU_PHONES) and len(CMU_PHONES) == 39


def test_lexicon_restrict_oov_and_round_trip(tmp_path):
    lx = Lexicon.from_cmudict(["hello", "world", "qzxv"])
    assert lx.words == ["<unk>", "hello", "world"]
    assert lx.prons["<unk>"] == ((SPN,),)
    assert lx.oov_rate(["hello qzxv", "world"]) == pytest.approx(1 / 3)
    lx.write(tmp_path / "lexicon.txt")
    assert Lexicon.read(tmp_path / "lexicon.txt").prons == lx.prons


def test_lexicon_read_errors_name_line(tmp_path):
    p = tmp_path / "lexicon.txt"
    p.write_text("hello HH AH L OW\nworld W ER L DX\n")
    with pytest.raises(DataError, match=r"lexicon.txt:2.*DX"):
        Lexicon.read(p)
