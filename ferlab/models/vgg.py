"""CustomVGG19 of the VGG19 transfer-learning report: torchvision VGG19 ``features``,
``AdaptiveAvgPool2d(1)``, then Linear(512,256) - BatchNorm1d - ReLU - Dropout - Linear(256,7).
``fine_tune_layers=N`` freezes every conv but the last N (``None``: all train).
``batch_norm=True`` takes VGG19-BN's features (BatchNorm after every conv) instead: not the
report's network, but the one that trains from scratch, where the report started from ImageNet."""
from torch import nn
from torchvision.models import VGG19_BN_Weights, VGG19_Weights, vgg19, vgg19_bn

from . import register
from .base import FERNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PretrainedWeightsUnavailable(RuntimeError):
    pass


def imagenet_features(builder, weights):
    """torchvision model with ImageNet weights, or a clear error when they cannot be fetched."""
    try:
        return builder(weights=weights)
    except Exception as exc:
        raise PretrainedWeightsUnavailable(
            f"could not load ImageNet weights {weights} ({type(exc).__name__}: {exc}); the download is "
            "unreachable here. Put the file in the torch hub cache (TORCH_HOME) or train from scratch "
            "with pretrained=False.") from exc


@register("vgg19")
class CustomVGG19(FERNet):
    def __init__(self, num_classes=7, in_channels=3, input_size=48, pretrained=False, fine_tune_layers=None,
                 hidden=256, dropout=0.5, batch_norm=False):
        config = dict(num_classes=num_classes, in_channels=in_channels, input_size=input_size, pretrained=pretrained,
                      fine_tune_layers=fine_tune_layers, hidden=hidden, dropout=dropout)
        if batch_norm:  # only when set, so the cards of plain VGG19 checkpoints stay as they were
            config["batch_norm"] = True
        super().__init__(**config)
        builder, weights = ((vgg19_bn, VGG19_BN_Weights.IMAGENET1K_V1) if batch_norm
                            else (vgg19, VGG19_Weights.IMAGENET1K_V1))
        backbone = imagenet_features(builder, weights) if pretrained else builder(weights=None)
        self.features = backbone.features
        if in_channels != 3:
            first = self.features[0]
            self.features[0] = nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, hidden), nn.BatchNorm1d(hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        convs = [i for i, m in enumerate(self.features) if isinstance(m, nn.Conv2d)]
        if fine_tune_layers is not None:
            trainable = set(convs[len(convs) - int(fine_tune_layers):]) if fine_tune_layers else set()
            for i in convs:
                for p in self.features[i].parameters():
                    p.requires_grad = i in trainable
        # the ReLU after each conv (after its BatchNorm in VGG19-BN): its output is that conv's feature map
        relus = [i for i, m in enumerate(self.features) if isinstance(m, nn.ReLU)]
        self.explainable_layers = tuple(f"features.{min(r for r in relus if r > c)}" for c in convs)
        self.default_layer = self.explainable_layers[-1]

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))
