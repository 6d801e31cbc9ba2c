"""torchvision MobileNetV2 and ResNet-18 with their stems adapted to 48x48 faces, so the last
feature maps stay 3x3 (MobileNetV2) and 6x6 (ResNet-18) instead of collapsing to 1-2 pixels."""
from torch import nn
from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights, mobilenet_v2, resnet18

from . import register
from .base import FERNet
from .vgg import imagenet_features


@register("mobilenet_v2")
class MobileNetV2FER(FERNet):
    def __init__(self, num_classes=7, in_channels=1, input_size=48, width_mult=1.0, dropout=0.2, pretrained=False):
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                         width_mult=width_mult, dropout=dropout, pretrained=pretrained)
        net = (imagenet_features(mobilenet_v2, MobileNet_V2_Weights.IMAGENET1K_V1) if pretrained
               else mobilenet_v2(weights=None, width_mult=width_mult))
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, stride=1, padding=1, bias=False)
        self.features = net.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(net.last_channel, num_classes))
        self.explainable_layers = tuple(f"features.{i}" for i in range(len(self.features)))
        self.default_layer = self.explainable_layers[-1]
        self.cam_layer, self.cam_linear = self.default_layer, "classifier.2"

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


@register("resnet18")
class ResNet18FER(FERNet):
    def __init__(self, num_classes=7, in_channels=1, input_size=48, pretrained=False):
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size, pretrained=pretrained)
        net = imagenet_features(resnet18, ResNet18_Weights.IMAGENET1K_V1) if pretrained else resnet18(weights=None)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), net.bn1, net.relu)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        self.explainable_layers = ("stem", "layer1", "layer2", "layer3", "layer4")
        self.default_layer = "layer4"
        self.cam_layer, self.cam_linear = "layer4", "fc"

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))
