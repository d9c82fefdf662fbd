import numpy as np

from mlsl_gluon.data import classes


def test_cityscapes_table_from_cityscapesscripts():
    assert len(classes.CITYSCAPES_19_NAMES) == 19
    assert classes.CITYSCAPES_19_NAMES[0] == "road" and classes.CITYSCAPES_19_NAMES[18] == "bicycle"
    lut = classes.LABEL_ID_TO_TRAIN_ID
    assert lut[7] == 0 and lut[23] == 10 and lut[33] == 18 and lut[0] == 255 and lut[255] == 255


def test_synthia_and_16_class_tables():
    s = classes.SYNTHIA_ID_TO_TRAIN_ID
    assert [s[i] for i in (3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11)] == list(range(16))
    assert s[0] == 255 and s[13] == 255
    t = classes.TRAIN19_TO_TRAIN16
    assert t[9] == 255 and t[14] == 255 and t[16] == 255 and t[255] == 255
    kept = [i for i in range(19) if t[i] != 255]
    assert [classes.CITYSCAPES_19_NAMES[i] for i in kept] == list(classes.SYNTHIA_16_NAMES)
    assert len(classes.MIOU13_CLASSES) == 13
    assert np.array_equal(classes.palette(16)[0], classes.palette(19)[0])
