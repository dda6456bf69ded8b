"""Names the command line offers for the data options, without importing the data pipeline (torch)."""

FACE_DETECTOR_NAMES = ("auto", "haar", "mediapipe")
"""``--face-detector`` / ``--faces``: ``auto`` (MediaPipe where the mediapipe package is installed, else Haar),
``haar`` (OpenCV's bundled cascades) or ``mediapipe`` (its bundled BlazeFace models)."""
