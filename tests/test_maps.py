"""The map post-processing: bicubic upsampling as two matmuls equals F.interpolate; IQR fusion."""
import pytest
import torch
import torch.nn.functional as F

from jsa_rt.model.maps import bicubic_matrix, fuse, min_max, upsample, upsample_matrix


@pytest.mark.parametrize("grid,size", [(7, 224), (7, 112), (4, 64), (9, 300)])
def test_upsample_matches_torch_bicubic(grid, size):
    x = torch.randn(3, grid, grid, dtype=torch.float64)
    ref = F.interpolate(x.unsqueeze(1), size=(size, size), mode="bicubic", align_corners=False).squeeze(1)
    torch.testing.assert_close(upsample(x, size), ref, rtol=0, atol=1e-12)


def test_min_max_and_fusion():
    aud = torch.zeros(1, 7, 7)
    aud[0, 1, 1] = 1.0
    img = torch.zeros(1, 7, 7)
    img[0, 5, 5] = 1.0
    m = min_max(torch.tensor([[[2.0, 4.0], [6.0, 10.0]]]))
    torch.testing.assert_close(m, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))
    fused = fuse(aud, img, alpha=0.6, size=70)
    assert fused.min() == 0 and abs(float(fused.max()) - 1) < 1e-6
    peak = divmod(int(fused[0].argmax()), 70)
    assert abs(peak[0] - 15) <= 2 and abs(peak[1] - 15) <= 2      # the heavier AUD map wins
    fused_img = fuse(aud, img, alpha=0.4, size=70)
    peak = divmod(int(fused_img[0].argmax()), 70)
    assert abs(peak[0] - 55) <= 2 and abs(peak[1] - 55) <= 2


# ---- map smoothing (ModelConfig.map_smoothing), folded into the upsampling matrix -------------------
def _normalised_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """The reference: a truncated Gaussian (radius ceil(2 sigma)) over each (g, g) map with zero
    padding, divided by the same blur of ones (normalised convolution)."""
    r = int(torch.tensor(2 * sigma).ceil())
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k1[:, None] * k1[None, :])[None, None]
    blur = lambda m: F.conv2d(m[:, None], k, padding=r)[:, 0]
    return blur(x) / blur(torch.ones_like(x))


def test_zero_smoothing_is_plain_bicubic():
    assert torch.allclose(upsample_matrix(12, 384, 0.0), bicubic_matrix(12, 384))


@pytest.mark.parametrize("sigma", [0.5, 0.75, 1.5])
def test_smoothing_matrix_is_a_normalised_gaussian_blur_then_bicubic(sigma):
    maps = torch.rand(3, 9, 9, dtype=torch.float64)
    ours = upsample(maps, 72, upsample_matrix(9, 72, sigma, dtype=torch.float64))
    reference = upsample(_normalised_blur(maps, sigma), 72, bicubic_matrix(9, 72, torch.float64))
    assert torch.allclose(ours, reference, atol=1e-10)
    flat = upsample(torch.ones(1, 9, 9, dtype=torch.float64), 72, upsample_matrix(9, 72, sigma, torch.float64))
    assert torch.allclose(flat, torch.ones_like(flat))              # a flat map stays flat, borders too


def test_smoothing_moves_the_peak_from_a_lone_token_to_the_blob():
    """What it is for: one high token beside an object's cells wins the argmax unsmoothed; the
    object (a 3 x 3 blob slightly lower) wins once the map is smoothed."""
    grid, size = 12, 96
    maps = torch.zeros(1, grid, grid)
    maps[0, 5:8, 5:8] = 0.8                 # the object
    maps[0, 2, 9] = 1.2                     # a lone token on the background
    peak = lambda m: divmod(int(m.flatten().argmax()), size)
    y, x = peak(upsample(maps, size, upsample_matrix(grid, size, 0.0)))
    assert (y // 8, x // 8) == (2, 9)
    y, x = peak(upsample(maps, size, upsample_matrix(grid, size, 0.75)))
    assert (y // 8, x // 8) == (6, 6)                                  # the blob's centre


def test_a_model_reads_its_smoothing_from_its_config():
    from jsa_rt.config import get_preset
    from jsa_rt.model import build_model, on_grid
    plain = build_model(get_preset("tiny"), pretrained=False)
    smooth = on_grid(plain, plain.cfg.image_size, map_smoothing=0.75)
    assert smooth.cfg.map_smoothing == 0.75 and plain.cfg.map_smoothing == 0.0
    assert torch.allclose(smooth.upsample_matrix, upsample_matrix(plain.cfg.grid, plain.cfg.image_size, 0.75))
    assert not torch.allclose(smooth.upsample_matrix, plain.upsample_matrix)
    with pytest.raises(ValueError, match="map_smoothing"):
        get_preset("tiny").with_overrides(map_smoothing=-1.0)
