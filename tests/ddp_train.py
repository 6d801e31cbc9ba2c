"""``ferlab-train`` with one more architecture, ``smooth``, for tests/test_distributed.py.

Two correct runs agree only as far as their floating-point sums allow.  In a network with
max-pooling or ReLU, a different summation order (one process vs two) eventually flips a near-tie
(which of two almost equal values a max-pool passes on, which side of zero a ReLU input falls),
and from there the runs drift apart: two one-process runs of ``cnn`` that differ only in the order
of the images inside each batch differ by 1e-2 in their weights after 13 SGD steps.  ``smooth``
(convolutions, BatchNorm, SiLU, average pooling) has no such ties, so its runs stay within float
tolerance and the test can ask for the same weights."""
from torch import nn

from ferlab.cli.train import main
from ferlab.models import register
from ferlab.models.base import FERNet


@register("smooth")
class SmoothNet(FERNet):
    def __init__(self, num_classes=7, in_channels=1, input_size=48, width=8):
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size, width=width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.SiLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 16, bias=False),
                                  nn.BatchNorm1d(16), nn.SiLU(), nn.Linear(16, num_classes))
        self.explainable_layers = ("features",)
        self.default_layer = "features"

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    main()
