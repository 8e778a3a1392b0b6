"""Image scoring for active learning: the paper's (Sec. 3.3) and the baselines."""

from almdn.acquisition.scoring import detections_frame, image_scores

__all__ = ["detections_frame", "image_scores"]
