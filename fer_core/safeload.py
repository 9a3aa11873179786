"""The one reader of torch files in fer-study: ``torch.load(weights_only=True)``, arbitrary
unpickling refused with one line (``fer_core/checkpoint.py`` says why). A module of its own, with
no fer_core imports but the errors, so that every loader (model files, training states,
pretrained weights in ``fer_core/pretrained.py``) uses it without importing the model code."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import Any

import torch

from fer_core.errors import ModelFileError


def load_weights_only(path: str | os.PathLike, what: str = "model file") -> Any:
    """``torch.load`` of a file we wrote, with arbitrary unpickling refused (a one-line ModelFileError)."""
    try:
        with warnings.catch_warnings():  # torch's warnings about a foreign file would print beside our one line
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's restricted unpickler names what the file asked for: say it, so an honest
        # old file (a numpy array, say) can be told from a planted payload
        asked = re.search(r"GLOBAL (\S+)", str(err))
        why = f" (it asks for {asked.group(1)})" if asked else ""
        raise ModelFileError(f"{path}: refused: the file needs arbitrary unpickling (not a fer-study {what}, "
                             f"or a planted payload); only weights are loaded{why}") from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, AttributeError, TypeError) as err:
        # not a torch file at all (torch.load fails on arbitrary bytes in many ways, e.g. KeyError)
        raise ModelFileError(f"{path}: not a fer-study {what} ({type(err).__name__})") from None
