"""The two heads on relu7: segmentation (paper Sec. 4.1.2) and image classification (Sec. 3.3).

Both read the 4096-channel stride-8 latent space of :class:`ResNet38`.
"""
import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .resnet38 import scaled_channels

SEG_HIDDEN_CHANNELS = 512
SEG_DILATION = 12
# Classifier layers start near zero so that a freshly initialised net predicts near-uniform
# probabilities; MSRA init on the pre-activation trunk otherwise gives logits in the tens.
CLASSIFIER_INIT_STD = 0.01
CLS_CONV_CHANNELS = 2048
CLS_FC_UNITS = 512
CLS_HEAD_VARIANTS = ("paper", "released")


class SegmentationHead(HybridBlock):
    """conv6a (3x3, 512, dilation 12, bias) -> ReLU -> linear<C> (3x3, C, dilation 12, bias).

    The ademxapp/CBST "fcn top": no BN; keeps the stride-8 resolution.

    Parameters
    ----------
    num_classes : int
        C, the number of output classes.
    in_channels : int
        Channels of the trunk output.
    width : float
        Multiplier on the hidden channel count (512 at 1.0); C is never scaled.
    """

    def __init__(self, num_classes, in_channels, width=1.0, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        hidden = scaled_channels(SEG_HIDDEN_CHANNELS, width)
        with self.name_scope():
            self.conv6a = nn.Conv2D(hidden, 3, padding=SEG_DILATION, dilation=SEG_DILATION,
                                    use_bias=True, in_channels=in_channels, prefix="conv6a_")
            self.linear = nn.Conv2D(num_classes, 3, padding=SEG_DILATION, dilation=SEG_DILATION,
                                    use_bias=True, in_channels=hidden,
                                    weight_initializer=mx.init.Normal(CLASSIFIER_INIT_STD),
                                    prefix="linear{}_".format(num_classes))

    def ademxapp_layers(self):
        """Yield ``(ademxapp layer name, block)``: ``conv6a`` and ``linear<C>``."""
        yield "conv6a", self.conv6a
        yield "linear{}".format(self.num_classes), self.linear

    def hybrid_forward(self, F, x):
        return self.linear(F.relu(self.conv6a(x)))


class ClassificationBranch(HybridBlock):
    """Image-level classifier for pseudo weak labels (paper Sec. 3.3, Eq. 5).

    1x1 conv 2048 (bias) -> ReLU -> 3x3 conv 2048 (bias) -> [ReLU] -> global average pooling
    -> FC 512 -> [ReLU] -> FC C. Returns logits; the sigmoid belongs to the loss / prediction.

    Parameters
    ----------
    num_classes : int
        C.
    in_channels : int
        Channels of the trunk output.
    width : float
        Multiplier on the 2048 / 512 hidden sizes.
    variant : {'paper', 'released'}
        ``'paper'``: ReLU after every layer but the last (the paper's text).
        ``'released'``: the authors' released code, which has no ReLU after the 3x3 conv nor
        after FC-512.
    """

    def __init__(self, num_classes, in_channels, width=1.0, variant="paper", **kwargs):
        super().__init__(**kwargs)
        if variant not in CLS_HEAD_VARIANTS:
            raise ValueError("cls_head must be one of {}, got {!r}".format(CLS_HEAD_VARIANTS, variant))
        self.variant = variant
        conv_channels = scaled_channels(CLS_CONV_CHANNELS, width)
        fc_units = scaled_channels(CLS_FC_UNITS, width)
        with self.name_scope():
            self.conv1 = nn.Conv2D(conv_channels, 1, use_bias=True, in_channels=in_channels,
                                   prefix="conv1_")
            self.conv2 = nn.Conv2D(conv_channels, 3, padding=1, use_bias=True,
                                   in_channels=conv_channels, prefix="conv2_")
            self.fc1 = nn.Dense(fc_units, in_units=conv_channels, prefix="fc1_")
            self.fc2 = nn.Dense(num_classes, in_units=fc_units,
                                weight_initializer=mx.init.Normal(CLASSIFIER_INIT_STD), prefix="fc2_")

    def hybrid_forward(self, F, x):
        relu_everywhere = self.variant == "paper"
        h = self.conv2(F.relu(self.conv1(x)))
        if relu_everywhere:
            h = F.relu(h)
        # Global pooling op rather than F.mean: mxnet.onnx (1.9.1) writes ReduceMean with an
        # `axes` attribute, which onnx >= 1.14's default opset rejects; GlobalAveragePool exports.
        h = F.Pooling(h, kernel=(1, 1), global_pool=True, pool_type="avg")
        h = self.fc1(h)
        if relu_everywhere:
            h = F.relu(h)
        return self.fc2(h)
