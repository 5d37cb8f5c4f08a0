"""Data: ACDC-layout h5 files, folds and splits, augmentation, scribbles, phantoms."""
