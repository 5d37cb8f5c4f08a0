"""The method registry: every method trainable by ``python code/train.py --method NAME``."""
from __future__ import annotations

from methods.base import Method
from methods.dmpls import DMPLS
from methods.maskmixadv import MaskMixAdv
from methods.regularized import PCEIVM, PCETV, PCEEntMin, PCEGatedCRF, PCEMumfordShah
from methods.scribble2label import Scribble2Label
from methods.supervised import PCE, Fully, PCERandomWalker
from methods.ustm import USTM

METHODS: dict[str, type[Method]] = {m.name: m for m in (
    Fully,
    PCE,
    PCETV,
    PCEEntMin,
    PCEGatedCRF,
    PCEIVM,
    PCERandomWalker,
    PCEMumfordShah,
    MaskMixAdv,
    DMPLS,
    Scribble2Label,
    USTM,
)}


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]
