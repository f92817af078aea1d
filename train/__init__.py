"""Training stage (``poet.train``): COCO keypoint data, the set-prediction loss, ``poet-train``."""
