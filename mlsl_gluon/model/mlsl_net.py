"""MLSLNet: ResNet-38 trunk + segmentation head + image classification branch (paper Fig. 2)."""
import mxnet as mx
from mxnet import autograd
from mxnet.gluon.block import HybridBlock

from .full_resolution import pad_to_multiple, upsample_probabilities
from .heads import ClassificationBranch, SegmentationHead
from .resnet38 import OUTPUT_STRIDE, ResNet38


class MLSLNet(HybridBlock):
    """The MLSL network: segmentation logits at stride 8 and (optionally) image-level logits.

    Parameters
    ----------
    num_classes : int
        C (19 for GTA5 -> Cityscapes, 16 for SYNTHIA -> Cityscapes).
    width : float
        Multiplier on every channel count except C (1.0 = the paper's network).
    with_classifier : bool
        Build the image classification branch used by the PWL loss (paper Sec. 3.3).
    freeze_bn : bool
        Freeze BN running statistics (gamma/beta stay trainable), as all released scripts do.
    cls_head : {'released', 'paper'}
        ReLU placement in the classification branch: ``'released'`` (default; the released
        code, which produced the paper's numbers: no ReLU after the 3x3 conv nor after FC-512)
        or ``'paper'`` (the paper's text: ReLU after every layer but the last).
    cls_init : {'msra', 'normal'}
        Initialiser of the branch's last layer: ``'msra'`` (default, released) or Normal(0.01);
        see :class:`~mlsl_gluon.model.heads.ClassificationBranch`.

    Notes
    -----
    ``net(x)`` with x (N, 3, H, W) returns ``(seg_logits, cls_logits)``: seg_logits
    (N, C, ceil(H/8), ceil(W/8)), cls_logits (N, C); with ``with_classifier=False`` only
    seg_logits. :meth:`segment` runs the trunk and the segmentation head only (the inference
    path); :meth:`predict` gives full-resolution probabilities by the released protocol.
    Parameters are created with known shapes but not initialised: call :func:`init_params`
    (or ``net.initialize(...)``) before use.

    References
    ----------
    J. Iqbal, M. Ali, "MLSL: Multi-Level Self-Supervised Learning for Domain Adaptation with
    Spatially Independent and Semantically Consistent Labeling", WACV 2020.
    """

    def __init__(self, num_classes=19, width=1.0, with_classifier=True, freeze_bn=True,
                 cls_head="released", cls_init="msra", **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError("num_classes must be a positive integer, got {!r}".format(num_classes))
        self.num_classes = int(num_classes)
        self.width = width
        self.with_classifier = with_classifier
        with self.name_scope():
            self.trunk = ResNet38(width=width, freeze_bn=freeze_bn, prefix="trunk_")
            self.seg_head = SegmentationHead(self.num_classes, self.trunk.out_channels, width,
                                             prefix="seg_")
            self.cls_branch = None
            if with_classifier:
                self.cls_branch = ClassificationBranch(self.num_classes, self.trunk.out_channels,
                                                       width, variant=cls_head, last_init=cls_init,
                                                       prefix="cls_")

    def ademxapp_layers(self):
        """Yield ``(ademxapp layer name, block)`` for the trunk, the segmentation head and, when
        built, the classification branch under the names of the authors' MLSL-PWL files.

        The branch names are those of the MLSL release (commit 94ac810), util1/symbol/resnet_v2.py:
        ``fcrna_model_a1_1`` (L444-453) builds ``fcn_top_1`` (L369-411) with the 1x1 conv
        ``conv61a`` (L396, conv_stage_v1: conv + bias), the 3x3 conv ``logistic<C>`` (L403) and
        ``rn_top_1`` (L362-366) with the FCs ``bCls0`` (512) and ``bCls1`` (C).
        """
        yield from self.trunk.ademxapp_layers()
        yield from self.seg_head.ademxapp_layers()
        if self.cls_branch is not None:
            yield "conv61a", self.cls_branch.conv1
            yield "logistic{}".format(self.num_classes), self.cls_branch.conv2
            yield "bCls0", self.cls_branch.fc1
            yield "bCls1", self.cls_branch.fc2

    def hybrid_forward(self, F, x):
        feat = self.trunk(x)
        seg_logits = self.seg_head(feat)
        if self.cls_branch is None:
            return seg_logits
        return seg_logits, self.cls_branch(feat)

    def segment(self, x):
        """Stride-8 segmentation logits from the trunk and the segmentation head only.

        The inference path: the classification branch (about 1.3x the segmentation path's
        multiply-adds) is not run. Uses the hybridized graphs of the two blocks when the
        network is hybridized.

        Parameters
        ----------
        x : NDArray or Symbol
            (N, 3, H, W) normalised images.

        Returns
        -------
        NDArray or Symbol
            (N, C, ceil(H/8), ceil(W/8)) logits.
        """
        return self.seg_head(self.trunk(x))

    def predict(self, x, flip=False, upsampling="bicubic"):
        """Softmax class probabilities at the input resolution, in inference mode.

        The released protocol (engrjavediqbal/MLSL ``issegm/evaluate.py`` L494-537, L341-352):
        zero-pad ``x`` at the bottom/right to a multiple of 8, softmax at stride 8, with
        ``flip`` average it with the mirrored prediction of the mirrored padded input (at
        stride 8), resize x8 and crop to (H, W). Stride-8 cell j covers pixels 8j..8j+7, the
        cell whose label training reads at pixel 8j + 4. Runs :meth:`segment` only.

        Parameters
        ----------
        x : NDArray
            (N, 3, H, W) normalised images, any H, W.
        flip : bool
            Average with the horizontally mirrored input's prediction.
        upsampling : {'bicubic', 'bilinear'}
            ``'bicubic'`` (default, released): PIL's bicubic filter on the probabilities;
            ``'bilinear'``: bilinear with half-pixel centres (same geometry).

        Returns
        -------
        NDArray
            (N, C, H, W) float32 probabilities, summing to 1 over axis 1 (every class plane
            goes through the same linear filter whose weights sum to 1); the cubic filter's
            overshoot can leave single values slightly outside [0, 1], as in the released code.
        """
        height, width = x.shape[2:]
        with autograd.pause(train_mode=False):
            padded = pad_to_multiple(x, OUTPUT_STRIDE)
            prob = mx.nd.softmax(self.segment(padded), axis=1)
            if flip:
                mirrored = mx.nd.softmax(self.segment(padded.flip(axis=3)), axis=1)
                prob = 0.5 * (prob + mirrored.flip(axis=3))
            return upsample_probabilities(prob, OUTPUT_STRIDE, height, width, upsampling)


def default_initializer():
    """MSRA (He) Gaussian init for conv/FC weights; biases and BN keep their own defaults."""
    return mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)


def init_params(net, ctx=None, initializer=None, force_reinit=False):
    """Initialise every parameter of ``net`` on ``ctx``.

    Parameters
    ----------
    net : Block
        Network whose parameters are not yet initialised.
    ctx : Context or list of Context, optional
        Devices to hold the parameters (default: the current context).
    initializer : mx.init.Initializer, optional
        Default :func:`default_initializer`. Biases start at zero, BN gamma 1, beta 0,
        running mean 0, running var 1 (Gluon's per-parameter defaults).
    force_reinit : bool
        Re-initialise parameters that already hold values.

    Returns
    -------
    Block
        ``net``, for chaining.
    """
    net.initialize(initializer or default_initializer(), ctx=ctx, force_reinit=force_reinit)
    return net
