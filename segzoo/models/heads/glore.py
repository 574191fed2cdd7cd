"""GloRe (Chen et al., CVPR 2019): graph-based global reasoning in an interaction space.

From X (C channels, L positions): states S = conv1x1(X) (2m channels), projections B = conv1x1(X) (m
nodes); node features V = S B^T / L; a graph convolution (1D conv over nodes plus identity, ReLU, 1D conv
over states); back-projection Y = GCN(V) B; conv1x1 to C and a zero-initialised BN, added to X. At
initialisation the unit is therefore the identity, so it can be inserted into a trained network.
"""

from __future__ import annotations

from torch import Tensor, nn

from segzoo.models.backbones import resnet_backbone
from segzoo.models.heads.fcn import FCNHead
from segzoo.models.segmentor import ConvBNReLU, Segmentor
from segzoo.registry import HEADS, MODELS


class GraphConv(nn.Module):
    """GCN over a fully connected graph of nodes: ``conv2(relu(conv1_nodes(V) + V))``."""

    def __init__(self, num_state: int, num_node: int) -> None:
        super().__init__()
        # a 1x1 Conv1d over the node axis is a learned adjacency matrix (with bias)
        self.node_conv = nn.Conv1d(num_node, num_node, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.state_conv = nn.Conv1d(num_state, num_state, kernel_size=1, bias=False)

    def forward(self, v: Tensor) -> Tensor:
        """``v``: ``[B, num_state, num_node]`` -> same shape."""
        h = self.node_conv(v.transpose(1, 2)).transpose(1, 2) + v
        return self.state_conv(self.relu(h))


class GloReUnit(nn.Module):
    """Global reasoning unit: project to ``num_mid`` nodes of ``2 * num_mid`` states, reason, project back."""

    def __init__(self, in_channels: int, num_mid: int = 64) -> None:
        super().__init__()
        self.num_state = 2 * num_mid
        self.num_node = num_mid
        self.conv_state = nn.Conv2d(in_channels, self.num_state, kernel_size=1)
        self.conv_proj = nn.Conv2d(in_channels, self.num_node, kernel_size=1)
        self.gcn = GraphConv(self.num_state, self.num_node)
        self.conv_extend = nn.Conv2d(self.num_state, in_channels, kernel_size=1, bias=False)
        self.blocker = nn.BatchNorm2d(in_channels)
        # zero-initialised BN: the unit starts as the identity (residual branch is exactly 0)
        nn.init.zeros_(self.blocker.weight)

    def forward(self, x: Tensor) -> Tensor:
        """``x + BN(conv(Y))`` with the same shape as ``x``."""
        b, _, h, w = x.shape
        length = h * w
        states = self.conv_state(x).reshape(b, self.num_state, length)
        proj = self.conv_proj(x).reshape(b, self.num_node, length)
        # divided by the number of positions so the node features do not grow with the image size
        nodes = states @ proj.transpose(1, 2) / length
        reasoned = self.gcn(nodes)
        y = (reasoned @ proj).reshape(b, self.num_state, h, w)
        return x + self.blocker(self.conv_extend(y))


@HEADS.register("glore_head")
class GloReHead(nn.Module):
    """3x3 conv to 512 + BN + ReLU, ``num_units`` GloRe units, 3x3 conv 512 + BN + ReLU, dropout 0.1, 1x1.

    ``num_units=0`` gives the same head without reasoning (the baseline of the paper's ablation).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 512,
        num_mid: int = 64,
        num_units: int = 1,
        dropout: float = 0.1,
        in_key: str = "layer4",
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_key = in_key
        self.reduce = ConvBNReLU(in_channels, channels, kernel_size=3)
        self.units = nn.Sequential(*[GloReUnit(channels, num_mid) for _ in range(num_units)])
        self.fuse = ConvBNReLU(channels, channels, kernel_size=3)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        """Logits at the resolution of ``features[in_key]``."""
        x = self.units(self.reduce(features[self.in_key]))
        return self.classifier(self.dropout(self.fuse(x)))


@MODELS.register("glore")
def glore(
    *,
    num_classes: int,
    backbone: str = "resnet50",
    output_stride: int | None = None,
    aux: bool = False,
    num_mid: int = 64,
    num_units: int = 1,
) -> Segmentor:
    """GloRe head on a ResNet (default ResNet-50, output stride 8); optional aux FCNHead on layer3."""
    features = ["layer3", "layer4"] if aux else ["layer4"]
    encoder = resnet_backbone("glore", backbone, output_stride, default_stride=8, features=features)
    head = GloReHead(encoder.channels["layer4"], num_classes, num_mid=num_mid, num_units=num_units)
    aux_head = FCNHead(encoder.channels["layer3"], num_classes, in_key="layer3") if aux else None
    return Segmentor(encoder, head, aux_head)


__all__ = ["GloReHead", "GloReUnit", "GraphConv", "glore"]
