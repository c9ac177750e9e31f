"""The registry builds the reference architecture exactly; shapes hold for every odd kernel."""

from __future__ import annotations

import pytest
import torch

from competition.models import FusionModel, create_model, list_models, model_hparams

REFERENCE_PARAMS = {"fusion": 1_274_698, "image": 222_986, "audio": 1_051_722}


@pytest.mark.parametrize("name,count", REFERENCE_PARAMS.items())
def test_reference_parameter_counts(name, count):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_reference_layers_and_intermediate_shapes():
    m = create_model("fusion")
    img, aud = torch.rand(3, 784), torch.randn(3, 507)
    x = m.image_encoder.conv(img.view(3, 1, 28, 28))
    assert x.shape == (3, 32, 7, 7)
    a = m.audio_encoder.conv(aud.unsqueeze(1))
    assert a.shape == (3, 64, 126)
    drops = [mod.p for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    assert drops == [0.5] * 6  # reference dropout everywhere
    assert m.head.in_features == 128 and m.head.out_features == 10


@pytest.mark.parametrize("ik", [3, 5, 7])
@pytest.mark.parametrize("ak", [3, 5, 7])
def test_odd_kernels_keep_shapes(ik, ak):
    m = create_model("fusion", image_kernel=ik, audio_kernel=ak, image_dropout=0.2, audio_dropout=0.3).eval()
    img, aud = torch.rand(4, 784), torch.randn(4, 507)
    assert m(img, aud).shape == (4, 10)
    feats = m.forward_features(img, aud)
    assert feats.shape == (4, 128)
    enc = m.encode(img, aud)
    assert enc["image"].shape == (4, 64) and enc["audio"].shape == (4, 64) and enc["fused"].shape == (4, 128)
    torch.testing.assert_close(m.forward_head(feats), m(img, aud))


@pytest.mark.parametrize("name,dim", [("image", 64), ("audio", 64), ("fusion", 128)])
def test_every_model_exposes_embeddings(name, dim):
    m = create_model(name).eval()
    img, aud = torch.rand(2, 784), torch.randn(2, 507)
    assert m.forward_features(img, aud).shape == (2, dim)
    assert m(img, aud).shape == (2, 10)


def test_unimodal_models_ignore_the_other_modality():
    img, aud = torch.rand(2, 784), torch.randn(2, 507)
    im = create_model("image").eval()
    torch.testing.assert_close(im(img, aud), im(img, None))
    au = create_model("audio").eval()
    torch.testing.assert_close(au(img, aud), au(None, aud))


@pytest.mark.parametrize("name", ["fusion", "image", "gated"])
def test_image_width_multiplies_the_image_encoders_channels(name):
    wide, ref = create_model(name, image_width=2).eval(), create_model(name).eval()
    convs = lambda m: [c.out_channels for c in m.image_encoder.conv if isinstance(c, torch.nn.Conv2d)]  # noqa: E731
    assert convs(ref) == [16, 32] and convs(wide) == [32, 64]
    assert wide.image_encoder.fc[1].in_features == 64 * 7 * 7  # (B, 64, 7, 7) flattened
    img, aud = torch.rand(3, 784), torch.randn(3, 507)
    assert wide(img, aud).shape == (3, 10)
    assert wide.forward_features(img, aud).shape == ref.forward_features(img, aud).shape  # (B, 64) or (B, 128)
    if name != "image":  # the audio encoder keeps the reference's size
        assert sum(p.numel() for p in wide.audio_encoder.parameters()) == 1_051_072


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(ValueError, match="odd"):
        create_model("fusion", image_kernel=4)
    with pytest.raises(ValueError, match="image_width must be a positive integer"):
        create_model("image", image_width=0)
    with pytest.raises(TypeError, match="no hyperparameter"):
        create_model("image", audio_dropout=0.1)
    with pytest.raises(KeyError, match="unknown model"):
        create_model("resnet9000")


def test_registry():
    assert {"fusion", "image", "audio"} <= set(list_models())
    assert isinstance(create_model("fusion"), FusionModel)
    assert set(model_hparams("fusion")) == {
        "image_kernel", "audio_kernel", "image_dropout", "audio_dropout", "modality_dropout", "image_width"
    }  # fmt: skip


def test_modality_dropout_blanks_one_modality_per_row_only_in_training():
    torch.manual_seed(0)
    m = create_model("fusion", modality_dropout=0.6, image_dropout=0.0, audio_dropout=0.0)
    img, aud = torch.rand(400, 784), torch.randn(400, 507)
    feats = m.train().forward_features(img, aud)  # (400, 128)
    img_off = (feats[:, :64] == 0).all(dim=1)
    aud_off = (feats[:, 64:] == 0).all(dim=1)
    assert not (img_off & aud_off).any()  # never both
    assert 0.2 < img_off.float().mean() < 0.4 and 0.2 < aud_off.float().mean() < 0.4
    m.eval()
    torch.testing.assert_close(m.forward_features(img, aud), torch.cat(list(m.encode(img, aud).values())[:2], 1))
    with pytest.raises(ValueError, match="modality_dropout"):
        create_model("fusion", modality_dropout=1.0)
