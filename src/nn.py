"""Network building blocks shared by every method (paper, Appendix D-F; docs/FAITHFULNESS.md).

The IMPALA-style ResNet encoder of LAPO (stride-2 conv + residual units), the decoder blocks of the LAPO
forward model, the transformer-like MLP block with re-fed inputs used by the LAOM / IDM heads, the latent BC
actor and the small action decoder. Methods compose these in their own scripts.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


def weight_init(module: nn.Module) -> None:
    """Orthogonal weights (gain 1) and zero biases for every Linear, Conv2d and ConvTranspose2d."""
    if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
        nn.init.orthogonal_(module.weight, gain=1.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def encoder_channels(scale: int, deep: bool = False) -> tuple[int, ...]:
    """Channels of the encoder blocks: (16, 32, 32) * scale, or (16, 32, 64, 128, 256) * scale when deep."""
    base = (16, 32, 64, 128, 256) if deep else (16, 32, 32)
    return tuple(c * scale for c in base)


def encoder_out_dim(scale: int, deep: bool, img_hw: int) -> int:
    """Size of the flattened encoder output for a square input of img_hw pixels (each block halves H and W)."""
    channels = encoder_channels(scale, deep)
    for _ in channels:
        img_hw = (img_hw + 1) // 2
    return channels[-1] * img_hw**2


class ResidualUnit(nn.Module):
    """x + Conv3x3(ReLU6(Dropout(Conv3x3(ReLU6(Dropout(x))))))."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.relu6(self.dropout(x)))
        h = self.conv1(F.relu6(self.dropout(h)))
        return x + h


class EncoderBlock(nn.Module):
    """Conv3x3 stride 2 (halves H and W), then residual units."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)
        self.res = nn.Sequential(*[ResidualUnit(out_channels, dropout) for _ in range(num_res_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.conv(x))


class DecoderBlock(nn.Module):
    """ConvTranspose2d(kernel 2, stride 2) (doubles H and W), then residual units."""

    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.res = nn.Sequential(*[ResidualUnit(out_channels, dropout) for _ in range(num_res_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.conv(x))


class ResNetEncoder(nn.Module):
    """[B, C_in, H, W] -> [B, C_out, H / 2^n, W / 2^n] (64 px, 3 blocks: 8 x 8)."""

    def __init__(self, in_channels: int, scale: int, deep: bool = False, num_res_blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        self.channels = encoder_channels(scale, deep)
        blocks, c = [], in_channels
        for out in self.channels:
            blocks.append(EncoderBlock(c, out, num_res_blocks, dropout))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = c

    def out_hw(self, img_hw: int) -> int:
        for _ in self.channels:
            img_hw = (img_hw + 1) // 2
        return img_hw

    def out_dim(self, img_hw: int) -> int:
        """Size of the flattened output for a square input of img_hw pixels."""
        return self.out_channels * self.out_hw(img_hw) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class MLPBlock(nn.Module):
    """y = LayerNorm(x + Dropout(Linear(4H -> H)(ReLU6(Linear(H -> 4H)(x)))))."""

    def __init__(self, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc0 = nn.Linear(hidden_dim, 4 * hidden_dim)
        self.fc1 = nn.Linear(4 * hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.fc1(F.relu6(self.fc0(x)))))


class ReFedMLP(nn.Module):
    """MLP of `num_layers` (Linear + MLPBlock) layers whose every layer after the first sees `cond` again.

    h = Block(Lin(in_dim -> H)(x)); h = Block(Lin(H + cond_dim -> H)([h, cond])) (num_layers - 1 times);
    out = Lin(H -> out_dim)(h). Re-feeding the inputs at every layer matters (paper, Appendix D).
    """

    def __init__(
        self, in_dim: int, cond_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3, dropout: float = 0.0
    ):
        super().__init__()
        refed = [nn.Linear(hidden_dim + cond_dim, hidden_dim) for _ in range(num_layers - 1)]
        self.inputs = nn.ModuleList([nn.Linear(in_dim, hidden_dim), *refed])
        self.blocks = nn.ModuleList([MLPBlock(hidden_dim, dropout) for _ in range(num_layers)])
        self.out = nn.Linear(hidden_dim, out_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.blocks[0](self.inputs[0](x))
        for fc, block in zip(self.inputs[1:], self.blocks[1:], strict=True):
            h = block(fc(torch.cat([h, cond], dim=-1)))
        return self.out(h)


class Actor(nn.Module):
    """Encoder -> mean over spatial positions -> ReLU6 -> Linear(C -> out_dim).

    Used for latent BC (out_dim = latent action size) and for BC / IDM-relabelled BC (out_dim = A).
    forward returns (output [B, out_dim], pooled embedding [B, C]).
    """

    def __init__(
        self,
        in_channels: int,
        out_dim: int,
        scale: int = 32,
        deep: bool = False,
        num_res_blocks: int = 2,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, scale, deep, num_res_blocks, dropout)
        self.head = nn.Linear(self.encoder.out_channels, out_dim)
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder(obs).mean(dim=(2, 3))  # [B, C, h, w] -> [B, C]
        return self.head(F.relu6(emb)), emb


class ActionMLP(nn.Module):
    """Two-hidden-layer MLP from latent actions to true actions: Linear(Z -> H), act, Linear(H -> H), act,
    Linear(H -> A). The stage-3 action decoder uses ReLU6 (H = 256 in the paper); the latent-BC diagnostic head uses
    ReLU (H = 128 for LAPO, 256 for LAOM, as released). Unlike the encoders and heads, it keeps PyTorch's default
    initialisation."""

    def __init__(self, latent_dim: int, act_dim: int, hidden_dim: int = 256, activation: type[nn.Module] = nn.ReLU6):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim),
            activation(),
            nn.Linear(hidden_dim, hidden_dim),
            activation(),
            nn.Linear(hidden_dim, act_dim),
        )  # PyTorch's default initialisation, as released (docs/FAITHFULNESS.md)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compile_networks(enabled: bool, *networks: nn.Module) -> None:
    """The `compile` field of every script: with `enabled`, each parameter-holding child of each network (encoders,
    heads) gets a compiled forward in place (nn.Module.compile), after the stage builds its networks. Its other
    methods, the loop and the parameter names (so the checkpoints) stay as they are; the losses match the eager
    ones to float tolerance (tests/test_compile.py)."""
    if not enabled:
        return
    for network in networks:
        for child in network.children():
            if next(child.parameters(), None) is not None:
                child.compile()
