"""Network blocks of every method (paper, Appendix D-F): ResNet encoder / decoder blocks, ReFedMLP, Actor, ActionMLP."""

import torch
import torch.nn as nn
import torch.nn.functional as F


def weight_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
        nn.init.orthogonal_(module.weight, gain=1.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def encoder_channels(scale: int, deep: bool = False) -> tuple[int, ...]:
    return tuple(c * scale for c in ((16, 32, 64, 128, 256) if deep else (16, 32, 32)))


def encoder_out_dim(scale: int, deep: bool, img_hw: int) -> int:
    """Flattened encoder output size for img_hw px inputs (each block halves H and W, rounding up)."""
    channels = encoder_channels(scale, deep)
    return channels[-1] * (-(-img_hw // 2 ** len(channels))) ** 2


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.relu6(self.dropout(x)))
        return x + self.conv1(F.relu6(self.dropout(h)))


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_res_blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        self.conv = self._conv(in_channels, out_channels)
        self.res = nn.Sequential(*[ResidualUnit(out_channels, dropout) for _ in range(num_res_blocks)])

    @staticmethod
    def _conv(in_channels: int, out_channels: int) -> nn.Module:
        return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.conv(x))


class DecoderBlock(EncoderBlock):
    @staticmethod
    def _conv(in_channels: int, out_channels: int) -> nn.Module:
        return nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)


class ResNetEncoder(nn.Module):
    """[B, C_in, H, W] -> [B, C_out, H / 2^n, W / 2^n] (64 px, 3 blocks: 8 x 8)."""

    def __init__(self, in_channels: int, scale: int, deep: bool = False, num_res_blocks: int = 2, dropout: float = 0.0):
        super().__init__()
        self.channels = encoder_channels(scale, deep)
        ins = (in_channels, *self.channels[:-1])
        blocks = [EncoderBlock(i, o, num_res_blocks, dropout) for i, o in zip(ins, self.channels, strict=True)]
        self.blocks = nn.Sequential(*blocks)
        self.out_channels = self.channels[-1]

    def out_hw(self, img_hw: int) -> int:
        return -(-img_hw // 2 ** len(self.channels))

    def out_dim(self, img_hw: int) -> int:
        return self.out_channels * self.out_hw(img_hw) ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class MLPBlock(nn.Module):
    def __init__(self, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc0 = nn.Linear(hidden_dim, 4 * hidden_dim)
        self.fc1 = nn.Linear(4 * hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm = nn.LayerNorm(hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.fc1(F.relu6(self.fc0(x)))))


class ReFedMLP(nn.Module):
    """MLP whose every later layer re-reads `cond`: h = Block(Lin([h, cond])) (it matters: paper, Appendix D)."""

    def __init__(self, in_dim: int, cond_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3, dropout=0.0):
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
    """Encoder -> spatial mean -> ReLU6 -> Linear(C -> out_dim), the latent BC and the BC actor: (output, embedding)."""

    def __init__(self, in_channels: int, out_dim: int, scale: int, deep: bool, num_res_blocks: int, dropout=0.0):
        super().__init__()
        self.encoder = ResNetEncoder(in_channels, scale, deep, num_res_blocks, dropout)
        self.head = nn.Linear(self.encoder.out_channels, out_dim)
        self.apply(weight_init)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.encoder(obs).mean(dim=(2, 3))
        return self.head(F.relu6(emb)), emb


class ActionMLP(nn.Module):
    """Z -> H -> H -> A MLP, PyTorch's default init: the stage-3 decoder (ReLU6), the latent-BC debug head (ReLU)."""

    def __init__(self, latent_dim: int, act_dim: int, hidden_dim: int = 256, activation: type[nn.Module] = nn.ReLU6):
        super().__init__()
        hidden = [nn.Linear(latent_dim, hidden_dim), activation(), nn.Linear(hidden_dim, hidden_dim), activation()]
        self.net = nn.Sequential(*hidden, nn.Linear(hidden_dim, act_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def compile_networks(enabled: bool, *networks: nn.Module) -> None:
    """With `enabled`, compiles each parameter-holding child in place (parameter names, so checkpoints, unchanged)."""
    if not enabled:
        return
    for network in networks:
        for child in network.children():
            if next(child.parameters(), None) is not None:
                child.compile()
