import math

import pytest
import torch

from losses.segmentation import ce_dice_loss, dice_loss, masked_mse, partial_ce


def test_partial_ce_uses_only_labeled_pixels():
    # Two pixels: one labeled class 0 with p = (e/(e+1), 1/(e+1)); one unlabeled (4).
    logits = torch.tensor([[1.0, 0.0], [0.0, 5.0]]).T.reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 4]]])
    assert partial_ce(logits, target).item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_partial_ce_without_labels_is_zero_and_differentiable():
    logits = torch.randn(1, 4, 2, 2, requires_grad=True)
    loss = partial_ce(logits, torch.full((1, 2, 2), 4))
    loss.backward()
    assert loss.item() == 0 and logits.grad is not None


def test_dice_loss_hand_values():
    target = torch.tensor([[[0, 1]]])
    perfect = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    assert dice_loss(perfect, target, None).item() == pytest.approx(0, abs=1e-5)
    # Uniform 0.5 everywhere: per class 2*0.5 / (0.5 + 1) = 2/3 -> loss 1/3.
    half = torch.full((1, 2, 1, 2), 0.5)
    assert dice_loss(half, target, None).item() == pytest.approx(1 / 3, abs=1e-4)


def test_dice_loss_ignores_unlabeled_pixels():
    target = torch.tensor([[[0, 4]]])
    # The unlabeled pixel says class 0: counted (as the class its 4 clamps to, 1), it would lower
    # class 0's Dice to 2/3 and class 1's to 0, a loss of 2/3. Only pixel 0 counts: class 0
    # perfect, class 1 absent in both -> (eps/eps) = 1.
    probs = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])
    assert dice_loss(probs, target).item() == pytest.approx(0, abs=1e-5)


def test_ce_dice_is_the_even_mix():
    # Equal logits over 2 classes: CE = log 2; softmax 0.5 everywhere; target (0, 1) gives
    # Dice 2/3 per class as above, so the loss is 0.5 log 2 + 0.5 / 3.
    target = torch.tensor([[[0, 1]]])
    loss = ce_dice_loss(torch.zeros(1, 2, 1, 2), target).item()
    assert loss == pytest.approx(0.5 * math.log(2) + 0.5 / 3, abs=1e-4)


def test_masked_mse_hand_values():
    p = torch.tensor([[0.5, 1.0], [0.5, 0.0]]).view(1, 2, 1, 2)
    q = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    # pixel 0: (0.25 + 0.25) / 2 channels; pixel 1: 0
    assert masked_mse(p, q, torch.tensor([[[True, True]]])).item() == pytest.approx(0.125)
    assert masked_mse(p, q, torch.tensor([[[True, False]]])).item() == pytest.approx(0.25)
    assert masked_mse(p, q, torch.tensor([[[False, False]]])).item() == 0.0
    # one channel, a 0/1 float mask (MaskMixAdv's hidden pixels): only the hidden pixel counts
    rec, image = torch.tensor([[[[3.0, 1.0]]]]), torch.zeros(1, 1, 1, 2)
    assert masked_mse(rec, image, torch.tensor([[[0.0, 1.0]]])).item() == 1.0
