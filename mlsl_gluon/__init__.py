"""mlsl-gluon: MXNet/Gluon reproduction of MLSL (Iqbal & Ali, WACV 2020).

Unsupervised domain adaptation of semantic segmentation by multi-level self-supervised
learning: SISC patch pseudo-labels plus pseudo weak labels (PWL), ResNet-38,
GTA5/SYNTHIA -> Cityscapes.
"""

__version__ = "0.1.0"
