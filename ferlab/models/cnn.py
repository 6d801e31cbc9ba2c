"""The compact Keras-style CNN of the 70.13% report: 32-64-128-256 filters, two 3x3 convs per
stage with BatchNorm, max-pooling after every second conv, Dropout 0.25, Dense 256."""
from collections import OrderedDict

from torch import nn

from . import register
from .base import FERNet, conv_bn_relu


@register("cnn")
class CompactCNN(FERNet):
    def __init__(self, num_classes=7, in_channels=1, input_size=48, widths=(32, 64, 128, 256),
                 dropout=0.25, hidden=256):
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                         widths=list(widths), dropout=dropout, hidden=hidden)
        layers, cin, n = OrderedDict(), in_channels, 0
        for stage, width in enumerate(widths, start=1):
            for _ in range(2):
                n += 1
                layers[f"conv{n}"] = conv_bn_relu(cin, width)
                cin = width
            layers[f"pool{stage}"] = nn.MaxPool2d(2)
            layers[f"drop{stage}"] = nn.Dropout(dropout)
        self.features = nn.Sequential(layers)
        side = input_size // 2 ** len(widths)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(cin * side * side, hidden, bias=False), nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        self.explainable_layers = tuple(f"features.conv{i}" for i in range(1, n + 1))
        self.default_layer = self.explainable_layers[-1]

    def forward(self, x):
        return self.classifier(self.features(x))
