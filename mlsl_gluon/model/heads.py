"""The two heads on relu7: segmentation (paper Sec. 4.1.2) and image classification (Sec. 3.3).

Both read the 4096-channel stride-8 latent space of :class:`ResNet38`.
"""
import mxnet as mx
from mxnet.gluon import nn
from mxnet.gluon.block import HybridBlock

from .resnet38 import scaled_channels

SEG_HIDDEN_CHANNELS = 512
SEG_DILATION = 12
# The segmentation classifier starts near zero so that a freshly initialised net predicts
# near-uniform probabilities; MSRA init on the pre-activation trunk otherwise gives logits in the
# tens. (Released runs load it from the source model, so its initialisation never matters there.)
CLASSIFIER_INIT_STD = 0.01
CLS_CONV_CHANNELS = 2048
CLS_FC_UNITS = 512
CLS_HEAD_VARIANTS = ("released", "paper")
#: Initialisation of the classification branch's last layer (FC-C): ``'msra'`` as the released
#: code, which builds the branch new and initialises every missing layer with the run's MSRA
#: (Xavier gaussian, fan-in, magnitude 2) initializer and zero biases (engrjavediqbal/MLSL
#: ``issegm1/solve_ST.py`` L727, L790-793: ``initializer=``, ``allow_missing=args.from_epoch == 0``);
#: ``'normal'``: Normal(0.01), near-uniform initial sigmoid outputs.
CLS_INIT_VARIANTS = ("msra", "normal")


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
    Released layer names (engrjavediqbal/MLSL ``util1/symbol/resnet_v2.py``): ``conv61a`` (1x1,
    with ReLU, L392-400), ``logistic<C>`` (3x3, no ReLU, L401-406), then ``rn_top_1`` (L362-366):
    global average pooling, ``bCls0`` (FC 512, no ReLU), ``bCls1`` (FC C), sigmoid.

    Parameters
    ----------
    num_classes : int
        C.
    in_channels : int
        Channels of the trunk output.
    width : float
        Multiplier on the 2048 / 512 hidden sizes.
    variant : {'released', 'paper'}
        ``'released'`` (default): the authors' released code (it produced the paper's numbers),
        which has no ReLU after the 3x3 conv nor after FC-512 (``resnet_v2.py`` L403-406, L364).
        ``'paper'``: ReLU after every layer but the last (the paper's text, Sec. 3.3).
    last_init : {'msra', 'normal'}
        Initialiser of FC-C: ``'msra'`` (default, released) leaves it to the initializer given
        to ``initialize`` (:func:`mlsl_gluon.model.init_params`: MSRA, as released);
        ``'normal'``: Normal(0.01). The other branch layers always take the given initializer.
    """

    def __init__(self, num_classes, in_channels, width=1.0, variant="released", last_init="msra",
                 **kwargs):
        super().__init__(**kwargs)
        if variant not in CLS_HEAD_VARIANTS:
            raise ValueError("cls_head must be one of {}, got {!r}".format(CLS_HEAD_VARIANTS, variant))
        if last_init not in CLS_INIT_VARIANTS:
            raise ValueError("cls_init must be one of {}, got {!r}".format(CLS_INIT_VARIANTS, last_init))
        self.variant = variant
        last_initializer = mx.init.Normal(CLASSIFIER_INIT_STD) if last_init == "normal" else None
        conv_channels = scaled_channels(CLS_CONV_CHANNELS, width)
        fc_units = scaled_channels(CLS_FC_UNITS, width)
        with self.name_scope():
            self.conv1 = nn.Conv2D(conv_channels, 1, use_bias=True, in_channels=in_channels,
                                   prefix="conv1_")
            self.conv2 = nn.Conv2D(conv_channels, 3, padding=1, use_bias=True,
                                   in_channels=conv_channels, prefix="conv2_")
            self.fc1 = nn.Dense(fc_units, in_units=conv_channels, prefix="fc1_")
            self.fc2 = nn.Dense(num_classes, in_units=fc_units, weight_initializer=last_initializer,
                                prefix="fc2_")

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
