"""The map post-processing: bicubic upsampling as two matmuls equals F.interpolate; IQR fusion."""
import pytest
import torch
import torch.nn.functional as F

from jsa_rt.model.maps import fuse, min_max, upsample


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
