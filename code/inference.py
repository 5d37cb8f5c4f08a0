"""Slice-wise inference on whole volumes and their scoring against the dense labels."""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

import metrics
from dataloaders import io
from dataloaders.acdc import VolumeSet
from dataloaders.intensity import normalise_intensity
from dataloaders.io import CLASS_NAMES, NUM_CLASSES, Case
from dataloaders.spacing import slices_to_target, undo_fit
from postprocess import postprocess


AMP = ("auto", "off", "bf16", "fp16")


def native_bf16(device: torch.device) -> bool:
    """True where ``device`` computes bf16 in hardware: a CUDA GPU with bf16, a CPU with AMX or
    AVX512-BF16. Elsewhere bf16 is emulated: a MaskMixAdv step took 16x as long as fp32 on a
    2-core AVX2 CPU (benchmarks/bench_train_step.py, 2026-12-06)."""
    if device.type == "cuda":
        with torch.cuda.device(device):  # the GPU asked about, not the current one
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported",
                                                                   "_is_avx512_bf16_supported"))


def resolve_device(name: str) -> torch.device:
    """``--device``: "auto" (CUDA where available, else the CPU), "cpu", "cuda" or "cuda:N";
    ValueError naming the flag for CUDA on a machine without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """``amp`` (one of :data:`AMP`) as run on ``device``: "auto" is "bf16" where bf16 is native
    (:func:`native_bf16`) and "off" (fp32) elsewhere; the others are kept."""
    if amp not in AMP:
        raise ValueError(f"--amp must be one of {', '.join(AMP)}, got {amp!r}")
    if amp == "auto":
        return "bf16" if native_bf16(device) else "off"
    return amp


def predicting_amp(trained: str, device: torch.device) -> str:
    """The precision a run trained in ``trained`` ("off", "bf16" or "fp16") predicts in on
    ``device``: the same where the device computes it natively (bf16: :func:`native_bf16`; fp16:
    CUDA), fp32 ("off") elsewhere, where emulation is many times slower and changes only rounding."""
    native = {"bf16": native_bf16(device), "fp16": device.type == "cuda"}
    return trained if native.get(trained, True) else "off"


def autocast(device: torch.device, amp: str):
    """The autocast context for ``amp`` in {"off", "bf16", "fp16"} on ``device`` ("auto" must be
    resolved first, :func:`resolve_amp`)."""
    if amp == "off":
        return contextlib.nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise ValueError(f"autocast: amp must be off, bf16 or fp16, got {amp!r}")
    return torch.autocast(device.type, dtype=dtypes[amp])


def distance_units(root: str, cases) -> str:
    """The units of HD95 and ASD over ``cases`` (of the data root ``root``): "mm" when every case
    has a spacing, "voxel" when none has. ValueError naming a volume without a spacing and one
    with: their mean would mix the two."""
    without = [c for c in cases if c.spacing is None]
    if without and len(without) < len(cases):
        other = next(c for c in cases if c.spacing is not None)
        raise ValueError(f"{io.volume_path(root, without[0].name)} has no spacing attribute but "
                         f"{io.volume_path(root, other.name)} has one: HD95 and ASD would average voxels with mm")
    return metrics.units_of(cases[0].spacing)


FLIPS = ((), (-1,), (-2,), (-2, -1))  # test-time augmentation: flips of W, H and both

# How a prediction at the input size returns to the slice's size. "labels": the argmax there,
# then nearest neighbour (WSL4MIS and the MaskMixAdv release); "scores": the class scores
# bilinearly, then the argmax. With perfect labels at 128x128 the first caps mean Dice on ACDC
# at 0.95 (MYO 0.93), the second at 0.99 (benchmarks/resolution_bound.py).
RESIZE_BACK = ("scores", "labels")


def network_inputs(x: torch.Tensor, size, spacing=None, target_spacing=None) -> torch.Tensor:
    """(B, 1, H, W) slices -> (B, 1, *size) network inputs: resized (bilinear), or with
    ``target_spacing`` (y, x) mm resampled from ``spacing`` (y, x) and centre cropped / padded."""
    if target_spacing is not None:
        return slices_to_target(x, spacing, target_spacing, size)
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def scores_on_slice(x: torch.Tensor, shape, spacing=None, target_spacing=None) -> torch.Tensor:
    """(B, C, h, w) class scores at the input size -> (B, C, H, W) on the (H, W) = ``shape`` slice
    grid, the inverse of :func:`network_inputs` (bilinear; zeros, equal scores, outside a crop);
    differentiable, so fine-tuning on the slice grid sees what prediction sees."""
    if target_spacing is not None:
        x = undo_fit(x, shape, spacing, target_spacing)
    return F.interpolate(x, size=tuple(shape), mode="bilinear", align_corners=False)


def back_to_slice(x: torch.Tensor, shape, resize_back: str, spacing=None, target_spacing=None) -> torch.Tensor:
    """(B, C, h, w) class scores at the input size -> (B, 1, H, W) float labels on the (H, W) =
    ``shape`` slice grid, the ``resize_back`` way (:data:`RESIZE_BACK`). With ``target_spacing``
    the input was the slice resampled from ``spacing`` (y, x) and centre cropped / padded."""
    if resize_back not in RESIZE_BACK:
        raise ValueError(f"resize_back must be one of {RESIZE_BACK}, got {resize_back!r}")
    if resize_back == "scores":
        return scores_on_slice(x, shape, spacing, target_spacing).argmax(1, keepdim=True).float()
    x = x.argmax(1, keepdim=True).float()
    if target_spacing is not None:
        x = undo_fit(x, shape, spacing, target_spacing)
    # "nearest-exact" is centre-aligned like the bilinear resize of the input ("nearest" shifts by
    # half a pixel, which biases HD95 and ASD).
    return F.interpolate(x, size=tuple(shape), mode="nearest-exact")


@torch.no_grad()
def predict_volume(model: torch.nn.Module, image: np.ndarray, size, device: torch.device,
                   amp: str = "off", batch_size: int = 16, channels_last: bool = False,
                   tta: bool = False, spacing=None, target_spacing=None,
                   resize_back: str = "scores") -> np.ndarray:
    """Segment a volume slice by slice (the one prediction path of validation, testing and
    ``predict.py``).

    Each (H, W) slice is resized (bilinear) to ``size`` (the training input size; the network is
    fully convolutional, so a model trained on smaller crops sees the whole slice), segmented,
    and brought back to (H, W) by :func:`back_to_slice` (``resize_back``). ``tta`` averages the
    softmax over the identity and the flips of H, W and both. With ``target_spacing`` (y, x) mm
    the slice is instead resampled from its ``spacing`` (z, y, x) to it and centre cropped /
    padded to ``size``, and the prediction brought back the inverse way (:mod:`dataloaders.spacing`).

    Args:
        model: (B, 1, h, w) -> (B, C, h, w) logits, in eval mode.
        image: (Z, H, W) float32 in [0, 1].
    Returns:
        (Z, H, W) uint8 class map.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[:, None]
    out = []
    if target_spacing is not None and spacing is None:
        raise ValueError("--target_spacing needs volumes with a spacing")
    in_plane = None if spacing is None else spacing[1:]
    for chunk in x.split(batch_size):
        chunk = network_inputs(chunk.to(device), size, in_plane, target_spacing)
        if channels_last:
            chunk = chunk.contiguous(memory_format=torch.channels_last)
        scores = 0
        for dims in FLIPS if tta else ((),):
            with autocast(device, amp):
                logits = model(chunk.flip(dims) if dims else chunk).float()
            # Softmax with or without TTA: bilinear resizing of logits and of probabilities may
            # disagree at boundaries, and a flip-equivariant model must predict the same both ways.
            probs = logits.softmax(1)
            scores = scores + (probs.flip(dims) if dims else probs)
        pred = back_to_slice(scores, image.shape[1:], resize_back, in_plane, target_spacing)
        out.append(pred[:, 0].to(torch.uint8).cpu())
    return torch.cat(out).numpy()


@dataclass(frozen=True)
class Prediction:
    """How a run predicts whole volumes, the same for validation, ``test_2D_fully.py``,
    ``predict.py`` and ``refine.py``: slices resized to ``input_size`` (h, w) (or resampled to
    ``target_spacing``), ``amp`` and ``channels_last`` as trained, ``tta`` flips, brought back to
    the slice's size by ``resize_back`` and post-processed by ``post`` over ``num_classes`` classes."""

    input_size: tuple
    device: torch.device
    amp: str = "off"
    channels_last: bool = False
    resize_back: str = "scores"
    post: str = "none"
    num_classes: int = NUM_CLASSES
    tta: bool = False
    target_spacing: tuple | None = None

    @classmethod
    def of(cls, cfg, device: torch.device, resize_back: str | None = None, post: str | None = None,
           tta: bool = False) -> "Prediction":
        """The prediction settings of a run's ``cfg``; ``resize_back`` and ``post``, where given,
        replace the run's ``--resize_back`` and ``--postprocess``."""
        target = cfg.target_spacing
        return cls(tuple(cfg.input_size), device, cfg.amp, cfg.channels_last, resize_back or cfg.resize_back,
                   post or cfg.postprocess, cfg.num_classes, tta, None if target is None else tuple(target))

    def raw(self, model: torch.nn.Module, image: np.ndarray, spacing=None) -> np.ndarray:
        """uint8 (Z, H, W) labels of ``image`` (Z, H, W) in [0, 1] with voxel ``spacing`` (z, y,
        x) mm (needed with ``target_spacing``), before post-processing."""
        return predict_volume(model, image, self.input_size, self.device, self.amp, channels_last=self.channels_last,
                              tta=self.tta, spacing=spacing, target_spacing=self.target_spacing,
                              resize_back=self.resize_back)

    def read_scan(self, path: str) -> Case:
        """The NIfTI scan ``path`` (:func:`io.read_scan`) with its image normalised as in training
        (float32 in [0, 1]). ValueError naming ``path`` when it has no geometry in its header and
        this prediction resamples to a target spacing: read as 1 mm voxels, its heart would be
        seen at the wrong scale."""
        scan = io.read_scan(path)
        if self.target_spacing and io.header_free(scan):
            raise ValueError(f"{path}: no geometry in its header (read as 1 mm voxels at the origin), but the model "
                             f"resamples slices to {self.target_spacing} mm, so the heart would be segmented at the "
                             "wrong scale; save the scan with its voxel spacing")
        return dataclasses.replace(scan, image=normalise_intensity(scan.image, path))

    def finish(self, pred: np.ndarray) -> np.ndarray:
        """``pred`` (Z, H, W) post-processed."""
        return postprocess(pred, self.post, self.num_classes)

    def labels(self, model: torch.nn.Module, image: np.ndarray, spacing=None) -> np.ndarray:
        """uint8 (Z, H, W): the prediction of ``image`` (:meth:`raw`, then :meth:`finish`)."""
        return self.finish(self.raw(model, image, spacing))


def check_classes_present(cases: list[Case], num_classes: int) -> None:
    """ValueError when one of the classes 1..``num_classes``-1 occurs in no case's label: a volume
    without the class and without its prediction scores Dice 1, so a declared class the data lack
    would lift every mean."""
    absent = [k for k in range(1, num_classes) if not any((c.label == k).any() for c in cases)]
    if cases and absent:  # no cases: nothing is scored (summarize refuses that)
        raise ValueError(f"label {absent[0]} occurs in none of the {len(cases)} reference volumes (e.g. "
                         f"{cases[0].name}): its Dice would count as 1 in each; score volumes that hold every class "
                         "(another split, --val_fraction) or declare only the classes the data hold (dataset.json "
                         "'labels', --class_names)")


def reference_volumes(root: str, names: list[str], num_classes: int, target_spacing=None) -> list[Case]:
    """The volumes ``names`` of ``root`` to score against, checked as every scoring needs them: a
    dense, non-empty label each (:class:`~dataloaders.acdc.VolumeSet`), one distance unit
    (:func:`distance_units`), every class 1..``num_classes``-1 in some label
    (:func:`check_classes_present`), classes numbered as the root names them
    (:func:`io.check_class_order`: a root converted from volumes, or built by hand, is checked
    nowhere else) and, for a model that resamples slices to ``target_spacing`` (y, x) mm, a
    spacing. ValueError naming the volume or class otherwise."""
    cases = list(VolumeSet(root, names))
    class_names = io.class_names(root)
    for case in cases:
        io.check_class_order([case.label], class_names, f"{io.volume_path(root, case.name)}: the label",
                             "the data root names them")
    if cases:
        distance_units(root, cases)  # all with a spacing, or none
        if target_spacing and cases[0].spacing is None:
            raise ValueError(f"{io.volume_path(root, cases[0].name)} has no spacing attribute, but the model "
                             f"resamples slices to {tuple(target_spacing)} mm (--target_spacing); score and "
                             "validate on volumes with a spacing")
    check_classes_present(cases, num_classes)
    return cases


def score_cases(predictions: dict[str, np.ndarray], cases: list[Case],
                num_classes: int = NUM_CLASSES) -> dict[str, dict]:
    """Per-volume :func:`metrics.volume_metrics` of each case, classes 1..``num_classes``-1:
    {case: {class: {metric: value}}}.

    Distances are in mm when a case has a spacing, else in voxels. A case without a prediction
    raises ValueError naming it, as does a class that no case's label holds
    (:func:`check_classes_present`).
    """
    missing = [c.name for c in cases if c.name not in predictions]
    if missing:
        raise ValueError(f"no prediction for case {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                 if len(missing) > 1 else ""))
    check_classes_present(cases, num_classes)
    classes = tuple(range(1, num_classes))
    return {c.name: metrics.volume_metrics(predictions[c.name], c.label, c.spacing, classes) for c in cases}


def table_rows(scores: dict[str, dict], names=CLASS_NAMES) -> list[dict]:
    """Flatten :func:`score_cases` into rows {"case", "class", "dice", "hd95", "asd"} for a CSV;
    ``names`` are the names of classes 1..C."""
    return [{"case": case, "class": name, **per_class[c]}
            for case, per_class in scores.items() for c, name in enumerate(names, start=1)]


def evaluate(model, cases: list[Case], how: Prediction, names=CLASS_NAMES):
    """Predict ``cases`` the ``how`` way and score them on the classes 1..C named ``names`` (the
    data root's): (per-volume scores, summary as :func:`metrics.summarize`)."""
    was_training = model.training
    model.eval()
    preds = {c.name: how.labels(model, c.image, c.spacing) for c in cases}
    model.train(was_training)
    scores = score_cases(preds, cases, len(names) + 1)
    return scores, metrics.summarize(list(scores.values()), names)
