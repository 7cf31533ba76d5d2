"""Synthetic datasets in the standard on-disk formats (ImageNet folders, ADE20K, COCO) for demos and tests."""
