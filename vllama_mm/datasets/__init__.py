"""Datasets on disk: synthetic ones in the standard formats (ImageNet folders, ADE20K,
COCO) for demos and tests, and the checks that a dataset folder is usable
(:mod:`.data_check`)."""
