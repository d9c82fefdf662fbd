"""ResNet-38 "model A1" trunk at output stride 8 (SPEC section 1; paper Sec. 4.1.2).

Wu, Shen & van den Hengel, "Wider or Deeper: Revisiting the ResNet Model for Visual
Recognition", Pattern Recognition 2019 (the ademxapp models). Every residual unit is
pre-activation: BN -> ReLU -> conv. The projection shortcut of a level's first unit reads the
BN-ReLU'd input of that unit; identity shortcuts read the raw input.

Layers keep their ademxapp names (``conv1a``, ``bn2a_branch2a``, ``res2a_branch2b1``,
``res2a_branch1``, ..., ``bn7``) through :meth:`ResNet38.ademxapp_layers`, which is what
:func:`mlsl_gluon.model.load_ademxapp_params` maps file keys onto.
"""
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

# ademxapp models are trained with this BN epsilon; the pretrained statistics assume it.
BN_EPS = 1.001e-5

# (level, units, channels per conv, kernel per conv, stride of the first unit,
#  dilation of each 3x3 conv in the first unit, in the other units, dropout before last conv)
# Levels 4 and 5 would halve the resolution again in the ImageNet model; for output stride 8
# level 5 keeps stride 1 and dilates instead: its first unit's first conv still sees the
# undilated grid (dilation 1), every later 3x3 conv in level 5 uses 2, and levels 6/7 use 4.
LEVELS = (
    (2, 3, (128, 128), (3, 3), 2, (1, 1), (1, 1), 0.0),
    (3, 3, (256, 256), (3, 3), 2, (1, 1), (1, 1), 0.0),
    (4, 6, (512, 512), (3, 3), 2, (1, 1), (1, 1), 0.0),
    (5, 3, (512, 1024), (3, 3), 1, (1, 2), (2, 2), 0.0),
    (6, 1, (512, 1024, 2048), (1, 3, 1), 1, (1, 4, 1), None, 0.3),
    (7, 1, (1024, 2048, 4096), (1, 3, 1), 1, (1, 4, 1), None, 0.5),
)
CONV1_CHANNELS = 64
OUTPUT_STRIDE = 8


def scaled_channels(channels, width):
    """Channel count ``channels`` times the width multiplier, rounded, at least 1."""
    return max(1, int(round(channels * width)))


def batch_norm(in_channels, freeze_bn, prefix):
    """ademxapp-style BN: eps 1.001e-5, learnable gamma/beta; running stats frozen if asked.

    With ``use_global_stats`` the running mean/var are used in training too and never
    updated, while gamma and beta still receive gradients (SPEC section 1).
    """
    return nn.BatchNorm(in_channels=in_channels, epsilon=BN_EPS, use_global_stats=freeze_bn,
                        prefix=prefix)


class PreActUnit(HybridBlock):
    """One pre-activation residual unit (BN -> ReLU -> conv, repeated per conv).

    Parameters
    ----------
    unit_name : str
        ademxapp unit name, e.g. ``'2a'``, ``'4b3'``, ``'6a'``.
    in_channels : int
        Input channels.
    channels : sequence of int
        Output channels of each conv of the residual branch.
    kernels : sequence of int
        Kernel size of each conv (3 for level 2-5 units, 1-3-1 for the bottlenecks).
    stride : int
        Stride of the first conv and of the projection shortcut.
    dilations : sequence of int
        Dilation of each conv (padding keeps the spatial size at stride 1).
    dropout : float
        Dropout rate applied after the last BN-ReLU, just before the last conv.
    projection : bool
        1x1 projection shortcut on the BN-ReLU'd input instead of the identity.
    freeze_bn : bool
        Freeze BN running statistics.
    """

    def __init__(self, unit_name, in_channels, channels, kernels, stride, dilations, dropout,
                 projection, freeze_bn, **kwargs):
        super().__init__(**kwargs)
        self.unit_name = unit_name
        self._dropout = dropout
        self._bns, self._convs = [], []
        with self.name_scope():
            cin = in_channels
            for i, (cout, kernel, dilation) in enumerate(zip(channels, kernels, dilations)):
                branch = "branch2a" if i == 0 else "branch2b{}".format(i)
                bn = batch_norm(cin, freeze_bn, prefix="bn_{}_".format(branch))
                conv = nn.Conv2D(cout, kernel, strides=stride if i == 0 else 1,
                                 padding=dilation * (kernel - 1) // 2, dilation=dilation,
                                 use_bias=False, in_channels=cin, prefix="res_{}_".format(branch))
                self.register_child(bn, "bn_" + branch)
                self.register_child(conv, "res_" + branch)
                self._bns.append((branch, bn))
                self._convs.append(conv)
                cin = cout
            self.branch1 = None
            if projection:
                self.branch1 = nn.Conv2D(channels[-1], 1, strides=stride, use_bias=False,
                                         in_channels=in_channels, prefix="res_branch1_")

    def ademxapp_layers(self):
        """Yield ``(ademxapp layer name, block)`` for every conv and BN of this unit."""
        for (branch, bn), conv in zip(self._bns, self._convs):
            yield "bn{}_{}".format(self.unit_name, branch), bn
            yield "res{}_{}".format(self.unit_name, branch), conv
        if self.branch1 is not None:
            yield "res{}_branch1".format(self.unit_name), self.branch1

    def hybrid_forward(self, F, x):
        h = x
        preact = None
        last = len(self._convs) - 1
        for i, ((_, bn), conv) in enumerate(zip(self._bns, self._convs)):
            h = F.relu(bn(h))
            if i == 0:
                preact = h
            if i == last and self._dropout > 0:
                h = F.Dropout(h, p=self._dropout)
            h = conv(h)
        shortcut = x if self.branch1 is None else self.branch1(preact)
        return h + shortcut


class ResNet38(HybridBlock):
    """ResNet-38 model A1 trunk, output stride 8, ending with bn7 + relu7 (4096 channels).

    Parameters
    ----------
    width : float
        Multiplier on every channel count (rounded, at least 1); 1.0 is the paper's network.
    freeze_bn : bool
        Use the BN running statistics in training too and never update them (as in every
        released training script); gamma and beta stay trainable. False lets them update.

    Notes
    -----
    Input (N, 3, H, W) gives (N, out_channels, ceil(H/8), ceil(W/8)).

    References
    ----------
    Z. Wu, C. Shen, A. van den Hengel, "Wider or Deeper: Revisiting the ResNet Model for
    Visual Recognition", Pattern Recognition 2019 (model A1).
    """

    def __init__(self, width=1.0, freeze_bn=True, **kwargs):
        super().__init__(**kwargs)
        if not width > 0:
            raise ValueError("width must be > 0, got {!r}".format(width))
        self.width = width
        self.freeze_bn = freeze_bn
        self._units = []
        with self.name_scope():
            cin = scaled_channels(CONV1_CHANNELS, width)
            self.conv1a = nn.Conv2D(cin, 3, padding=1, use_bias=False, in_channels=3,
                                    prefix="conv1a_")
            for level, num_units, channels, kernels, stride, dil_first, dil_rest, dropout in LEVELS:
                channels = [scaled_channels(c, width) for c in channels]
                for u in range(num_units):
                    name = "{}a".format(level) if u == 0 else "{}b{}".format(level, u)
                    unit = PreActUnit(
                        name, cin, channels, kernels,
                        stride=stride if u == 0 else 1,
                        dilations=dil_first if u == 0 else dil_rest,
                        dropout=dropout, projection=(u == 0), freeze_bn=freeze_bn,
                        prefix="res{}_".format(name))
                    self.register_child(unit, "res" + name)
                    self._units.append(unit)
                    cin = channels[-1]
            self.bn7 = batch_norm(cin, freeze_bn, prefix="bn7_")
        self.out_channels = cin

    def ademxapp_layers(self):
        """Yield ``(ademxapp layer name, block)`` for every conv and BN of the trunk, in order."""
        yield "conv1a", self.conv1a
        for unit in self._units:
            yield from unit.ademxapp_layers()
        yield "bn7", self.bn7

    def hybrid_forward(self, F, x):
        x = self.conv1a(x)
        for unit in self._units:
            x = unit(x)
        return F.relu(self.bn7(x))
