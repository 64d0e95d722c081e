"""streamcap trainer: data building, generator training (pretrain, cycle-GAN) and export.

Run as ``python trainer/train.py`` or ``python -m trainer.train`` from the repository root.
"""
