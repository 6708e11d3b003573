"""Using a trained acoustic model: load ``final.pt`` and compute the pseudo log-likelihoods
``log p(s|x) - prior_scale * log p(s)`` the hybrid decoder consumes (``asr-hf nnet-forward``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from asr_hf.nnet.data import FrameSet, Utterances
from asr_hf.nnet.model import DNN, DNNConfig
from asr_hf.utils.errors import DataError


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[DNN, np.ndarray]:
    """Load ``final.pt``: the model (eval mode) and its log-priors.

    Raises a one-line :class:`DataError` naming ``path`` when it is missing, not a
    ``final.pt`` (corrupt, or another kind of file) or holds non-finite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:
        raise DataError(str(path), f"unreadable model file ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    keys = ("model", "feat_dim", "num_pdfs", "model_cfg", "log_priors")
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        have = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise DataError(str(path), f"not a final.pt written by train-am (needs {', '.join(keys)}; has {have})")
    bad = [k for k, v in payload["model"].items() if torch.is_tensor(v) and v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise DataError(str(path), f"model has non-finite weights in {', '.join(bad)}")
    try:
        model = DNN(payload["feat_dim"], payload["num_pdfs"], DNNConfig(**payload["model_cfg"])).to(device)
        model.load_state_dict(payload["model"])
    except (TypeError, RuntimeError) as exc:
        raise DataError(str(path), f"model does not match its config ({' '.join(str(exc).split())[:300]})") from exc
    model.eval()
    return model, np.asarray(payload["log_priors"])


@torch.no_grad()
def forward_loglikes(
    model: DNN, feature_cuts, log_prior: np.ndarray, prior_scale: float = 1.0,
    device: torch.device | str = "cpu", chunk: int = 8192,
) -> Iterator[tuple[str, np.ndarray]]:
    """Per utterance ``log p(s|x) - prior_scale * log p(s)``, shape ``(T, num_pdfs)``.

    This is the matrix the hybrid decoder consumes (it applies the acoustic weight).

    Args:
        model: from :func:`load_model`.
        feature_cuts: lhotse cuts with features of the model's dimension.
        log_prior: ``log p(s)``, ``(num_pdfs,)`` (``final.pt``'s priors).
        prior_scale: the weight of the prior.
        device: where the forward passes run.
        chunk: frames per forward pass.

    Raises:
        DataError: naming the utterance, for features of the wrong dimension or with
            NaN/inf values, or non-finite scores.
    """
    pri = torch.as_tensor(log_prior, dtype=torch.float32, device=device)
    for cut in feature_cuts:
        f = np.asarray(cut.load_features(), dtype=np.float32)
        if f.ndim != 2 or f.shape[1] != model.feat_dim:
            raise DataError(cut.id, f"features of shape {f.shape}, the model takes dimension {model.feat_dim}")
        if not np.isfinite(f).all():
            raise DataError(cut.id, "features have NaN/inf values")
        utt = Utterances([cut.id], f, np.full(f.shape[0], -1, np.int64), np.asarray([f.shape[0]]))
        fs = FrameSet(utt, model.cfg.context, device)
        out = []
        for x, _ in fs.batches(torch.arange(len(fs)), chunk):
            out.append(torch.log_softmax(model(x), dim=-1) - prior_scale * pri)
        mat = torch.cat(out).cpu().numpy()
        if not np.isfinite(mat).all():  # e.g. features far outside the training range
            raise DataError(cut.id, "non-finite pseudo log-likelihoods")
        yield cut.id, mat


__all__ = ["forward_loglikes", "load_model", "resolve_device"]
