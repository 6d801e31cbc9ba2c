"""Small models with a known answer, for the explanation tests."""
import torch
from torch import nn

from ferlab.checkpoints import FERClassifier, base_card
from ferlab.models import FERNet


class Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


class QuadrantNet(FERNet):
    """Reads only the top-left quadrant: its last feature map is zero everywhere else."""

    def __init__(self, size=48):
        super().__init__(input_size=size)
        mask = torch.zeros(1, 1, size // 2, size // 2)
        mask[..., : size // 5, : size // 5] = 1  # its receptive field stays inside the quadrant
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                      Mask(mask))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 7)
        self.architecture = "quadrant"
        self.explainable_layers = ("features.1", "features")
        self.default_layer = "features"
        self.cam_layer, self.cam_linear = "features", "fc"
        self.calls, self.fail_on_call = 0, None

    def forward(self, x):
        self.calls += 1
        a = self.features(x)
        if self.fail_on_call == self.calls:
            raise RuntimeError("boom")
        return self.fc(self.pool(a).flatten(1))


def wrap(module: FERNet, name="quadrant") -> FERClassifier:
    module.eval()
    card = base_card(module, [0.5] * module.in_channels, [0.5] * module.in_channels)
    return FERClassifier(name=name, module=module, card=card, device=torch.device("cpu"))


def quadrant_model(seed=0) -> FERClassifier:
    torch.manual_seed(seed)
    m = QuadrantNet()
    with torch.no_grad():  # monotone in brightness: every class has positive evidence in the quadrant
        for p in list(m.features.parameters()) + [m.fc.weight]:
            p.abs_()
    return wrap(m)
