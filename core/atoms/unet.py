"""A small U-Net that turns an atomic-resolution image into a column-centre probability map."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` poolings and ``base`` channels at full resolution (doubling per level).

    Input (B, 1, H, W) normalised image, output (B, 1, H, W) logits of "a column centre is
    here". H and W need not be multiples of 2**depth (inputs are padded inside).
    """

    def __init__(self, base: int = 12, depth: int = 3) -> None:
        super().__init__()
        self.depth = depth
        self.base = base
        ch = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(1, ch[0])] + [_block(ch[i], ch[i + 1]) for i in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.Conv2d(ch[i + 1], ch[i], 1) for i in reversed(range(depth))])
        self.dec = nn.ModuleList([_block(2 * ch[i], ch[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(ch[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a (B, 1, H, W) batch."""
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            # the 1x1 convolution before the upsampling: the same map (bilinear weights sum to one,
            # both are linear), on a quarter of the pixels and half the channels
            x = nn.functional.interpolate(up(x), scale_factor=2, mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)[..., :h, :w]


def seeded_unet(seed: int = 0, **arch: int) -> UNet:
    """A fresh :class:`UNet` whose initial weights depend on ``seed`` only: drawn from a generator
    seeded here, not from torch's global one (whose state depends on whatever ran before; that
    made training from one frame depend on test order), and torch's global state is left as it
    was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return UNet(**arch)


def fuse_batchnorm(model: UNet) -> UNet:
    """An inference copy of ``model`` with every BatchNorm folded into the preceding convolution."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                    seq[i + 1] = nn.Identity()
    return fused


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
