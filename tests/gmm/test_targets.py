"""pdf alignments attached to cuts load back frame-exact, also for segments that start
mid-recording (the LDC corpora's cuts)."""

import numpy as np
import pytest
from lhotse import MonoCut, Recording
from lhotse.audio import AudioSource
from lhotse.features import Features

from asr_hf.gmm.targets import attach_pdf_alignments


def _segment(tmp_path, start: float, frames: int) -> MonoCut:
    rec = Recording(id="rec", sources=[AudioSource("file", [0], str(tmp_path / "none.wav"))], sampling_rate=16000,
                    num_samples=16000 * 20, duration=20.0)  # fmt: skip
    dur = frames * 0.01
    feats = Features(type="fbank", num_frames=frames, num_features=3, frame_shift=0.01, sampling_rate=16000,
                     start=start, duration=dur, storage_type="numpy_files", storage_path=str(tmp_path),
                     storage_key="f", recording_id="rec", channels=0)  # fmt: skip
    return MonoCut(id=f"seg-{start}", start=start, duration=dur, channel=0, recording=rec, features=feats)


@pytest.mark.parametrize("start", [0.0, 3.322])
def test_alignment_of_a_segment_loads_back_whole(tmp_path, start):
    cut = _segment(tmp_path, start, 140)
    ali = np.arange(140, dtype=np.int32) % 7
    cs = attach_pdf_alignments([cut], {cut.id: ali}, tmp_path / "ali", "train", num_pdfs=7)
    back = next(iter(cs)).load_pdf_ali()
    np.testing.assert_array_equal(back, ali)
