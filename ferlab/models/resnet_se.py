"""The from-scratch residual squeeze-and-excitation net (the lightweight residual-SE report):
conv-BN-ReLU stem, four residual blocks each with an SE block and strided downsampling,
adaptive average pooling, head Dropout 0.4 - Linear - ReLU - Dropout 0.3 - Linear."""
from torch import nn

from . import register
from .base import FERNet, conv_bn_relu


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x)


class ResidualSEBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.se = SqueezeExcite(cout, reduction)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.se(self.body(x)) + self.shortcut(x))


@register("resnet_se")
class ResNetSE(FERNet):
    def __init__(self, num_classes=7, in_channels=1, input_size=48, width=32, strides=(1, 2, 2, 2),
                 reduction=16, hidden=256, dropout=(0.4, 0.3)):
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size, width=width,
                         strides=list(strides), reduction=reduction, hidden=hidden, dropout=list(dropout))
        self.stem = conv_bn_relu(in_channels, width)
        blocks, cin = [], width
        for i, stride in enumerate(strides):
            cout = width * 2 ** i
            blocks.append(ResidualSEBlock(cin, cout, stride, reduction))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout[0]), nn.Linear(cin, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout[1]), nn.Linear(hidden, num_classes))
        self.explainable_layers = ("stem",) + tuple(f"blocks.{i}" for i in range(len(strides)))
        self.default_layer = self.explainable_layers[-1]

    def forward(self, x):
        return self.head(self.pool(self.blocks(self.stem(x))))
