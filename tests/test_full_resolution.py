"""Full-resolution probabilities: the released protocol against PIL, and its label-grid geometry.

Reference of the protocol: the normalised image zero-padded (numpy) at the bottom/right to a
multiple of 8, softmax of the network's stride-8 logits, the flip average at stride 8, then
PIL's bicubic x8 resize of each class plane (mode 'F') and the crop. Reference of the geometry:
the training labels, which read pixel 8j + 4 for stride-8 cell j (``LABEL_OFFSET``).
"""
import mxnet as mx
import numpy as np
import pytest
from PIL import Image

from mlsl_gluon.data.transforms import LABEL_OFFSET, LABEL_STRIDE, subsample_label
from mlsl_gluon.model import MLSLNet, init_params
from mlsl_gluon.model.full_resolution import UPSAMPLING_MODES, bicubic_upsample

# PIL resamples mode 'F' planes with double-precision weights and sums, and rounds the
# horizontal pass to float32; ours multiplies float32 planes by float32 weights. The difference
# is a few float32 roundings of values <= ~1.1: measured <= 3.6e-7 on random probability planes
# from 1x2 to 128x256 cells, so 1e-6 (about 8 ulp at 1.0) leaves room without hiding a wrong
# tap, which would show errors of order 1e-2 (cv2's cubic, a = -0.75, differs by 1.3e-2..4.8e-2).
PIL_TOLERANCE = 1e-6


def _pil_bicubic_x8(planes):
    """(C, h, w) float32 -> (C, 8h, 8w) by PIL's bicubic resize of each plane."""
    h, w = planes.shape[1:]
    return np.stack([np.array(Image.fromarray(p.astype(np.float32), mode="F")
                              .resize((8 * w, 8 * h), Image.BICUBIC)) for p in planes])


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def net():
    mx.random.seed(2)
    net = MLSLNet(num_classes=5, width=1 / 16, with_classifier=True)
    init_params(net, ctx=mx.cpu())
    net.seg_head.linear.weight.set_data(net.seg_head.linear.weight.data() * 5)  # varied, not saturated
    return net


@pytest.mark.parametrize("shape", [(5, 13), (37, 53), (48, 64)])
@pytest.mark.parametrize("flip", [False, True])
def test_released_protocol_equals_pil_bicubic_on_padded_stride8_probabilities(net, shape, flip):
    height, width = shape
    image = np.random.default_rng(height).normal(size=(1, 3, height, width)).astype(np.float32)
    padded = np.pad(image, ((0, 0), (0, 0), (0, -height % 8), (0, -width % 8)))
    prob8 = _softmax(net.segment(mx.nd.array(padded)).asnumpy())
    if flip:
        mirrored = _softmax(net.segment(mx.nd.array(padded[..., ::-1].copy())).asnumpy())
        prob8 = 0.5 * (prob8 + mirrored[..., ::-1])
    expected = _pil_bicubic_x8(prob8[0])[:, :height, :width]
    got = net.predict(mx.nd.array(image), flip=flip).asnumpy()[0]
    assert got.shape == (5, height, width)
    assert np.abs(expected - expected.mean(axis=(1, 2), keepdims=True)).max() > 0.01  # not flat
    np.testing.assert_allclose(got, expected, rtol=0, atol=PIL_TOLERANCE)


def test_bicubic_upsample_crops_and_rejects_a_larger_crop():
    planes = np.random.default_rng(0).random((2, 3, 4, 6)).astype(np.float32)
    full = bicubic_upsample(mx.nd.array(planes), 8, 32, 48).asnumpy()
    for n in range(2):
        np.testing.assert_allclose(full[n], _pil_bicubic_x8(planes[n]), rtol=0, atol=PIL_TOLERANCE)
    np.testing.assert_array_equal(bicubic_upsample(mx.nd.array(planes), 8, 27, 41).asnumpy(),
                                  full[:, :, :27, :41])
    with pytest.raises(ValueError, match="exceeds"):
        bicubic_upsample(mx.nd.array(planes), 8, 33, 48)


class _StepReader(MLSLNet):
    """A 'network' whose stride-8 output is the class it reads at each cell's label pixel.

    Class 1 where the first input channel is positive at pixel (8i + 4, 8j + 4), else class 0,
    as confident logits: exactly the training label of a step image, cell by cell.
    """

    def segment(self, x):
        read = x[:, 0, LABEL_OFFSET::LABEL_STRIDE, LABEL_OFFSET::LABEL_STRIDE]
        is_one = (read > 0).expand_dims(1)
        return 6.0 * mx.nd.concat(1 - is_one, is_one, dim=1) - 3.0


@pytest.mark.parametrize("upsampling", UPSAMPLING_MODES)
@pytest.mark.parametrize("flip", [False, True])
def test_class_boundary_lands_on_the_label_grid(upsampling, flip):
    # The figures: steps at 64, 1024 and 1984 of a 2048-wide image (stride-8 columns
    # 8, 128, 248); also at a width that is not a multiple of 8.
    reader = _StepReader(num_classes=2, width=1 / 64, with_classifier=False)
    for width, step in [(2048, 64), (2048, 1024), (2048, 1984), (203, 96)]:
        image = np.where(np.arange(width) >= step, 1.0, -1.0).astype(np.float32)
        x = mx.nd.array(np.broadcast_to(image, (1, 3, 16, width)).copy())
        label8 = subsample_label((np.broadcast_to(image, (16, width)) > 0).astype(np.uint8))
        cells = np.flatnonzero(label8[0])
        assert cells[0] == step // 8  # the training labels change at cell step / 8
        pred = reader.predict(x, flip=flip, upsampling=upsampling).asnumpy()[0].argmax(axis=0)
        assert (pred == pred[:1]).all()
        # cell j covers pixels 8j .. 8j + 7: the boundary is exactly at the step. (Past the
        # last whole cell the reader sees the zero padding, as a network would.)
        whole = 8 * (width // 8)
        assert not pred[0, :step].any() and pred[0, step:whole].all()


def test_unknown_upsampling_is_rejected(net):
    with pytest.raises(ValueError, match="upsampling"):
        net.predict(mx.nd.zeros((1, 3, 8, 8)), upsampling="nearest")
