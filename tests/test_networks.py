import pytest
import torch
from torch import nn

from networks import NETWORKS, MaskMixAdvNet, PatchDiscriminator, build_network


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
def test_every_network_maps_image_to_class_logits(name, upsampling):
    net = build_network(name, upsampling=upsampling).eval()
    assert net(torch.rand(2, 1, 32, 48)).shape == (2, 4, 32, 48)
    kinds = {type(m) for m in net.modules()}
    assert (nn.ConvTranspose2d in kinds) == (upsampling == "transposed")
    assert (nn.Upsample in kinds) == (upsampling == "bilinear")


def test_bilinear_unet_with_a_3x3_head_has_the_releases_parameters():
    # WSL4MIS's UNet (bilinear UpBlocks, 3x3 out_conv) has 1,813,764 parameters, counted from its
    # code; with a 1x1 head 16 * 4 * (9 - 1) = 512 fewer.
    count = lambda **d: sum(p.numel() for p in build_network("unet", **d).parameters())  # noqa: E731
    assert count(upsampling="bilinear", head_kernel=3) == 1_813_764
    assert count(upsampling="bilinear") == 1_813_764 - 512
    with pytest.raises(ValueError, match="--upsampling must be one of"):
        build_network("unet", upsampling="nearest")
    with pytest.raises(ValueError, match="--head_kernel must be one of"):
        build_network("unet", head_kernel=2)


def test_unknown_network_names_the_choices():
    with pytest.raises(ValueError, match="unknown network 'vnet'.*unet"):
        build_network("vnet")


def test_unet_rejects_sizes_that_are_not_multiples_of_16():
    with pytest.raises(ValueError, match="multiples of 16"):
        build_network("unet")(torch.rand(1, 1, 40, 32))


def test_unet_channels_and_dropout_follow_the_field():
    net = build_network("unet")
    widths = [s[0].out_channels for s in net.encoder.stages]
    drops = [s[3].p for s in net.encoder.stages]
    assert widths == [16, 32, 64, 128, 256]
    assert drops == [0.05, 0.1, 0.2, 0.3, 0.5]


@pytest.mark.parametrize("level", ["image", "feature", "both"])
@pytest.mark.parametrize("shared", [False, True])
def test_siamese_views_shapes(level, shared):
    net = MaskMixAdvNet(shared_decoder=shared)
    assert len(net.seg_decoders) == (1 if shared else 2)
    x, m = torch.rand(3, 1, 32, 32), (torch.rand(3, 1, 32, 32) > 0.5).float()
    seg1, seg2, rec1, rec2 = net.forward_views(x, m, level)
    assert seg1.shape == seg2.shape == (3, 4, 32, 32)
    assert rec1.shape == rec2.shape == (3, 1, 32, 32)


def test_siamese_image_level_view_ignores_hidden_pixels():
    # View 1 sees x*M only: changing pixels where M = 0 must not change its prediction.
    torch.manual_seed(0)
    net = MaskMixAdvNet().eval()
    m = torch.zeros(1, 1, 32, 32)
    m[..., :16] = 1
    x = torch.rand(1, 1, 32, 32)
    y = x.clone()
    y[..., 16:] = torch.rand(1, 1, 32, 16)
    assert torch.equal(net.forward_views(x, m)[0], net.forward_views(y, m)[0])
    assert not torch.equal(net.forward_views(x, m)[1], net.forward_views(y, m)[1])


def test_siamese_forward_averages_the_two_decoders():
    net = MaskMixAdvNet().eval()
    x = torch.rand(2, 1, 32, 32)
    feats = net.encoder(x)
    mean = torch.stack([d(feats).softmax(1) for d in net.seg_decoders]).mean(0)
    torch.testing.assert_close(net(x).softmax(1), mean, atol=1e-5, rtol=1e-4)


def test_discriminator_scores_patches():
    d = PatchDiscriminator(ndf=8)
    assert d(torch.rand(2, 4, 128, 96)).shape == (2, 1, 4, 3)


def test_attention_dropout_zeroes_the_most_activated_positions_without_rescaling():
    from networks.unet import AttentionDropout

    attention = torch.tensor([[1.0, 2.0], [3.7, 4.0]])
    x = torch.stack([attention - 1, attention + 1])[None]  # channel mean = attention
    drop = AttentionDropout()
    for seed in range(5):
        torch.manual_seed(seed)  # threshold in [0.7, 0.9] x 4: 2.0 always kept, 3.7 always dropped
        assert torch.equal(drop(x), x * torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(drop.eval()(x), x)


def test_dual_decoder_unet_perturbations_are_named():
    from networks.unet import AttentionDropout, DualDecoderUNet

    assert isinstance(DualDecoderUNet(perturbation="attention_dropout").feature_dropout, AttentionDropout)
    with pytest.raises(ValueError, match="unknown feature perturbation 'noise'"):
        DualDecoderUNet(perturbation="noise")


def test_feature_level_views_see_only_their_features():
    # A mutation audit found that views masked by (M, M) instead of (M, 1 - M) passed every test.
    torch.manual_seed(0)
    net = MaskMixAdvNet().eval()
    x, y = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    for mask, hidden in ((torch.ones(1, 1, 32, 32), 1), (torch.zeros(1, 1, 32, 32), 0)):
        # the view whose mask is all 0 gets all-zero features: its output cannot depend on the image
        seen_x, seen_y = net.forward_views(x, mask, "feature"), net.forward_views(y, mask, "feature")
        assert torch.equal(seen_x[hidden], seen_y[hidden])
        assert not torch.equal(seen_x[1 - hidden], seen_y[1 - hidden])


def test_attention_dropout_thresholds_each_sample_by_its_own_peak():
    # A mutation audit found this unpinned: the peak was taken over the whole batch: a dim sample lost
    # nothing.
    from networks.unet import AttentionDropout

    att = torch.tensor([[1.0, 2.0], [3.7, 4.0]])
    x = torch.stack([att[None], 100 * att[None]])  # (2, 1, 2, 2): the second 100x brighter
    torch.manual_seed(0)
    out = AttentionDropout()(x)
    keep = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    assert torch.equal(out[0, 0], att * keep) and torch.equal(out[1, 0], 100 * att * keep)


def test_attention_dropout_draws_a_threshold_per_sample():
    # A mutation audit found this unpinned: one threshold for the whole batch: identical samples were
    # always dropped alike.
    from networks.unet import AttentionDropout

    att = torch.linspace(0.0, 1.0, 201).view(1, 1, 1, 201)  # ratios 0.700, 0.705, ... 0.900 in between
    x = att.expand(8, 1, 1, 201).clone()
    torch.manual_seed(0)
    kept = (AttentionDropout()(x) != 0).sum((1, 2, 3))
    assert len(set(kept.tolist())) > 1


def test_dual_decoder_perturbs_every_encoder_stage():
    # A mutation audit found this unpinned: the deepest features reached the auxiliary decoder
    # unperturbed.
    from networks.unet import DualDecoderUNet

    net = DualDecoderUNet()
    seen = []

    class Record(torch.nn.Module):
        def forward(self, f):
            seen.append(f.shape[1])
            return torch.zeros_like(f)

    net.feature_dropout = Record()
    net.train()
    main, aux = net.forward_both(torch.rand(2, 1, 32, 32))
    assert seen == [16, 32, 64, 128, 256]
    assert aux.shape == main.shape


@pytest.mark.parametrize("level", ["feature", "both"])
def test_masked_features_stay_bf16_under_autocast(level):
    # A float32 mask promoted the bf16 features to float32, and every decoder convolution cast
    # them back: 15% of the CPU step went to those copies.
    net = MaskMixAdvNet()
    seen = []
    for up in [up for d in (*net.seg_decoders, net.rec_decoder) for up in d.ups]:
        up.register_forward_pre_hook(lambda _, inputs: seen.extend(t.dtype for t in inputs))
    x, m = torch.rand(2, 1, 32, 32), (torch.rand(2, 1, 32, 32) > 0.5).float()
    with torch.autocast("cpu", torch.bfloat16):
        net.forward_views(x, m, level)
    assert len(seen) == 3 * 4 * 2 and set(seen) == {torch.bfloat16}
