#!/usr/bin/env python
"""Check a dataset folder or write a list file; the same as `mlsl-gluon prepare check|list`.

Examples
--------
    python tools/prepare_dataset.py check --dataset gta5 --root /data/gta5
    python tools/prepare_dataset.py list --dataset cityscapes --root /data/cityscapes --split train \
        --no-labels --out lists/cityscapes_train.lst
"""
import logging

from mlsl_gluon.cli.data_cmds import prepare

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepare(prog_name="prepare_dataset.py")
