"""Images in: one preprocessing path, face locators, on-the-fly face manipulations, the training dataset
with its two batch streams, and a camera simulator for data-free runs."""

from bfdkern.data.dataset import FaceDataset, Sample, StreamSampler, endless, make_loaders
from bfdkern.data.decode import DEFAULT_LIMITS, Limits, UnreadableImage, decode_image
from bfdkern.data.decode import decode_image as load_image
from bfdkern.data.faces import FaceLocator, FaceParts, HaarFaceLocator, LandmarkLocator, TemplateLocator
from bfdkern.data.manipulations import KINDS, MANIPULATIONS, manipulate, save_examples
from bfdkern.data.simulator import simulate_collection, simulate_uncamera
from bfdkern.data.transforms import to_tensor

__all__ = [
    "DEFAULT_LIMITS",
    "KINDS",
    "Limits",
    "MANIPULATIONS",
    "FaceDataset",
    "FaceLocator",
    "FaceParts",
    "HaarFaceLocator",
    "LandmarkLocator",
    "Sample",
    "StreamSampler",
    "TemplateLocator",
    "UnreadableImage",
    "decode_image",
    "endless",
    "load_image",
    "make_loaders",
    "manipulate",
    "save_examples",
    "simulate_collection",
    "simulate_uncamera",
    "to_tensor",
]
