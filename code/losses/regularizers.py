"""Unsupervised regularisers that scribble-supervised baselines add to the partial cross-entropy.

All functions take softmax maps ``probs`` of shape (B, C, H, W) with values in [0, 1] (summing to 1
over C), and where needed ``images`` of shape (B, K, H, W) with intensities in [0, 1] (K = 1 for
the grey-level MRI used here). They compute in float32 (inputs are cast with ``.float()``) so that
they are safe under autocast, make no device assumptions, are differentiable with respect to
``probs`` and return a 0-dim tensor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-6

# WSL4MIS' pCE + gated CRF setting: one kernel, weight 1, sigma_xy 6 px, sigma_intensity 0.1.
DEFAULT_GATED_CRF_KERNELS = ({"weight": 1.0, "xy": 6.0, "intensity": 0.1},)


def _check_probs(probs: torch.Tensor, name: str = "probs") -> torch.Tensor:
    if not isinstance(probs, torch.Tensor) or probs.dim() != 4:
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(f"{name} must be a (B, C, H, W) tensor, got {shape}")
    return probs.float()


def _check_images(images: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, K, H, W) tensor, got {shape}")
    b, _, h, w = probs.shape
    if images.shape[0] != b or images.shape[2:] != (h, w):
        raise ValueError(f"images {tuple(images.shape)} do not match probs {tuple(probs.shape)} "
                         "in batch or spatial size")
    return images.float()


def _check_mask(mask: torch.Tensor | None, probs: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    b, _, h, w = probs.shape
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (b, h, w):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a (B, H, W) = {(b, h, w)} tensor, got {shape}")
    return mask.bool()


def tv_loss(probs: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of the softmax maps (Javanmardi et al., 2016).

    ``probs`` (B, C, H, W) in [0, 1]. Returns mean |p[h+1,w] - p[h,w]| + mean |p[h,w+1] - p[h,w]|
    (each mean over B, C and the available differences), a 0-dim float32 tensor in [0, 2];
    0 for a map that is constant in space. Maps with H or W of 1 contribute 0 along that axis.
    """
    p = _check_probs(probs)
    dh = (p[:, :, 1:, :] - p[:, :, :-1, :]).abs()
    dw = (p[:, :, :, 1:] - p[:, :, :, :-1]).abs()
    zero = p.sum() * 0.0
    return (dh.mean() if dh.numel() else zero) + (dw.mean() if dw.numel() else zero)


def pixel_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-pixel entropy -sum_c p_c log p_c in nats: (B, C, H, W) in [0, 1] -> (B, H, W) float32
    in [0, log C]."""
    p = _check_probs(probs)
    # Clamping inside the log keeps the gradient finite at p = 0 (where p log p -> 0).
    return -(p * torch.log(p.clamp_min(_EPS))).sum(dim=1)


def entropy_loss(probs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Entropy minimisation (Grandvalet & Bengio, 2005).

    ``probs`` (B, C, H, W) in [0, 1]; ``mask`` optional (B, H, W) bool, True on the pixels to
    include (typically the unlabeled ones). Returns the mean over the included pixels of
    ``-sum_c p_c log p_c`` in nats (not normalised by log C), a 0-dim float32 tensor in
    [0, log C]: 0 for one-hot maps, log C for uniform ones. An all-False mask gives 0 (with a
    graph, so ``backward`` still works).
    """
    ent = pixel_entropy(probs)
    m = _check_mask(mask, probs)
    if m is None:
        return ent.mean()
    n = m.sum()
    return (ent * m).sum() / n.clamp_min(1)


def _pixel_grid(h: int, w: int, step_y: float, step_x: float, device) -> torch.Tensor:
    """(1, 2, h, w) (y, x) coordinates of an h x w grid whose pixels span ``step_*`` pixels."""
    ys = torch.arange(h, device=device, dtype=torch.float32) * step_y
    xs = torch.arange(w, device=device, dtype=torch.float32) * step_x
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gy, gx)).unsqueeze(0)


def _neighbours(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, K, h, w) -> (B, K, (2r+1)^2, h, w): every pixel's window, zero-padded at the border."""
    b, k, h, w = x.shape
    d = 2 * radius + 1
    return F.unfold(x, kernel_size=d, padding=radius).view(b, k, d * d, h, w)


def gated_crf_loss(probs: torch.Tensor, images: torch.Tensor,
                   kernels=DEFAULT_GATED_CRF_KERNELS, radius: int = 5,
                   scale_factor: float = 0.5, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Gated CRF loss (Obukhov et al., 2019, "Gated CRF Loss for Weakly Supervised Semantic
    Image Segmentation").

    Energy of a dense CRF with a Potts compatibility, restricted to a (2r+1)^2 window::

        L = 1/|V| * sum_{i in V} sum_{j in N_r(i), j != i, j in V} K_ij * (1 - sum_c p_i(c) p_j(c))

    with ``K_ij = sum_k weight_k * exp(-|pos_i - pos_j|^2 / (2 xy_k^2)
    - |x_i - x_j|^2 / (2 intensity_k^2))``. ``1 - p_i.p_j`` equals ``sum_c p_i(c)(1 - p_j(c))``,
    the probability that i and j get different labels. V is the set of valid pixels: inside the
    image (the zero padding of the window is gated out) and, if given, where ``mask`` is True.

    Args:
        probs: (B, C, H, W) softmax maps in [0, 1].
        images: (B, K, H, W) intensities in [0, 1] (K = 1 for MRI; all channels share the
            ``intensity`` sigma).
        kernels: sequence of dicts with keys ``weight``, ``xy`` (sigma in original-resolution
            pixels) and ``intensity`` (sigma in intensity units; ``rgb`` is accepted as an alias,
            the key WSL4MIS uses).
        radius: window radius in pixels of the *downscaled* map.
        scale_factor: the maps are downscaled by this factor (area averaging) before the pairwise
            sum, which costs O(H W r^2 s^2); positions stay in original-resolution pixels, so
            ``xy`` keeps its meaning.
        mask: optional (B, H, W) bool, True where pixels take part.

    Returns a 0-dim float32 tensor >= 0 (at most ``sum_k weight_k * ((2r+1)^2 - 1)``); it is 0
    for a prediction that is one-hot and constant over every window (e.g. the same class
    everywhere). A prediction that follows the image edges scores lower than one that cuts
    across them.
    """
    p = _check_probs(probs)
    img = _check_images(images, p)
    m = _check_mask(mask, p)
    if not isinstance(radius, int) or radius < 1:
        raise ValueError(f"radius must be a positive int, got {radius!r}")
    if not 0 < scale_factor <= 1:
        raise ValueError(f"scale_factor must be in (0, 1], got {scale_factor!r}")
    kernels = list(kernels)
    if not kernels:
        raise ValueError("kernels must hold at least one kernel description")

    b, _, h, w = p.shape
    valid = torch.ones(b, 1, h, w, device=p.device) if m is None else m.unsqueeze(1).float()
    if scale_factor < 1:
        size = (max(1, round(h * scale_factor)), max(1, round(w * scale_factor)))
        p = F.interpolate(p, size=size, mode="area")
        img = F.interpolate(img, size=size, mode="area")
        # A downscaled pixel is valid when most of the pixels it averages are.
        valid = (F.interpolate(valid, size=size, mode="area") > 0.5).float()
    hs, ws = p.shape[2:]
    # Positions in original pixels, so the xy sigma does not depend on scale_factor.
    pos = _pixel_grid(hs, ws, h / hs, w / ws, p.device).expand(b, -1, -1, -1)
    pos_n = _neighbours(pos, radius)
    img_n = _neighbours(img, radius)
    d_pos = ((pos_n - pos.unsqueeze(2)) ** 2).sum(1)  # (B, (2r+1)^2, hs, ws)
    d_img = ((img_n - img.unsqueeze(2)) ** 2).sum(1)

    kernel = torch.zeros_like(d_pos)
    for desc in kernels:
        unknown = set(desc) - {"weight", "xy", "intensity", "rgb"}
        if unknown or "xy" not in desc or not ({"intensity", "rgb"} & set(desc)):
            raise ValueError(f"kernels: bad description {desc!r} "
                             "(need keys weight, xy, intensity)")
        s_xy = float(desc["xy"])
        s_int = float(desc.get("intensity", desc.get("rgb")))
        kernel = kernel + float(desc.get("weight", 1.0)) * torch.exp(
            -d_pos / (2 * s_xy ** 2) - d_img / (2 * s_int ** 2))

    # Gate: both ends of a pair must be valid; the zero padding of unfold marks outside pixels
    # invalid. The centre pair (i, i) is excluded: 1 - p_i.p_i is not a pairwise disagreement.
    gate = _neighbours(valid, radius).squeeze(1) * valid
    gate[:, (2 * radius + 1) ** 2 // 2] = 0
    kernel = kernel * gate

    agree = (_neighbours(p, radius) * p.unsqueeze(2)).sum(1)  # p_i . p_j, (B, (2r+1)^2, hs, ws)
    energy = (kernel * (1.0 - agree)).sum()
    return energy / valid.sum().clamp_min(1)


def _weighted_sum(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i p_ic x_ik: (B, C, H, W), (B, K, H, W) -> (B, C, K).

    Element-wise rather than einsum, because autocast would run einsum's matmul in low precision.
    """
    return (p.unsqueeze(2) * x.unsqueeze(1)).sum(dim=(3, 4))


def _distance_to_class_means(p: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft class masses (B, C) and the squared distance of each pixel to each class's
    p-weighted mean intensity, |x_i - mu_bc|^2 summed over channels: (B, C, H, W)."""
    mass = p.sum(dim=(2, 3)) + _EPS
    mu = _weighted_sum(p, x) / mass.unsqueeze(-1)  # (B, C, K)
    return mass, ((x.unsqueeze(1) - mu[..., None, None]) ** 2).sum(2)


def ivm_loss(probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Intensity variance minimisation.

    For each image b and class c, with soft region weights p_ic::

        mu_bc  = sum_i p_ic x_i / (sum_i p_ic + eps)
        var_bc = sum_i p_ic |x_i - mu_bc|^2 / (sum_i p_ic + eps)

    averaged over B and C (``eps`` = 1e-6 keeps empty classes at ~0 instead of NaN).
    ``probs`` (B, C, H, W) in [0, 1]; ``images`` (B, K, H, W) in [0, 1] (|.|^2 sums channels).
    Returns a 0-dim float32 tensor in [0, K/4]; 0 when every class covers a region of constant
    intensity.
    """
    p = _check_probs(probs)
    x = _check_images(images, p)
    mass, diff2 = _distance_to_class_means(p, x)
    var = (p * diff2).sum(dim=(2, 3)) / mass
    return var.mean()


def mumford_shah_loss(probs: torch.Tensor, images: torch.Tensor,
                      tv_weight: float = 1e-3) -> torch.Tensor:
    """Mumford-Shah loss (Kim & Ye, 2019, "Mumford-Shah Loss Functional for Image Segmentation
    with Deep Learning").

    Level-set data term plus a length (TV) term::

        L = 1/(B H W) * sum_b sum_c sum_i |x_i - c_bc|^2 p_ic  +  tv_weight * tv_loss(probs)

    with ``c_bc = sum_i p_ic x_i / (sum_i p_ic + eps)`` the weighted mean intensity of class c
    in image b. The data term is averaged over pixels (Kim & Ye sum), so the value does not grow
    with image size; ``tv_weight`` (lambda) therefore weighs per-pixel quantities.
    ``probs`` (B, C, H, W) in [0, 1]; ``images`` (B, K, H, W) in [0, 1]. Returns a 0-dim float32
    tensor >= 0; the data term is at most K.
    """
    p = _check_probs(probs)
    x = _check_images(images, p)
    b, _, h, w = p.shape
    _, diff2 = _distance_to_class_means(p, x)
    data = (p * diff2).sum() / (b * h * w)
    return data + tv_weight * tv_loss(p)


def mumford_shah_release_loss(probs: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The Mumford-Shah term as the MaskMixAdv release computes it (``--ms_form release``).

    Its script calls its ``MumfordShah_Loss`` with the image and the softmax in each other's
    places, which gives, summed over images b, classes c and pixels i::

        L = sum_b sum_c sum_i x_bi (p_bci - c_bc)^2,   c_bc = sum_i p_bci x_bi / sum_i x_bi

    a variance of each class map weighted by the image's brightness (the image's own total
    variation, its other term, is a constant and left out). A sum, not a mean: the release weighs
    it by 1e-6. ``probs`` (B, C, H, W) in [0, 1]; ``images`` (B, 1, H, W) in [0, 1]. Returns a
    0-dim float32 tensor >= 0.
    """
    p = _check_probs(probs)
    x = _check_images(images, p)
    centre = (p * x).sum((2, 3), keepdim=True) / x.sum((2, 3), keepdim=True).clamp_min(1e-6)
    return (x * (p - centre) ** 2).sum()


__all__ = ["tv_loss", "pixel_entropy", "entropy_loss", "gated_crf_loss", "ivm_loss", "mumford_shah_loss",
           "mumford_shah_release_loss", "DEFAULT_GATED_CRF_KERNELS"]
