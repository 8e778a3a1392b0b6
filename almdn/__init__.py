"""almdn: active learning for object detection with mixture density networks.

Implements Choi et al., "Active Learning for Deep Object Detection via Probabilistic
Modeling" (ICCV 2021): detectors whose heads predict Gaussian mixtures for every box
coordinate and class, giving aleatoric and epistemic uncertainty in one forward pass.
"""

__version__ = "0.1.0"
