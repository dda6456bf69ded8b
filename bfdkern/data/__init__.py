"""Images in: one preprocessing path, face locators, on-the-fly face manipulations, the training dataset
with its two batch streams, and a camera simulator for data-free runs. Names load on first use
(:mod:`bfdkern.lazy`): the command line reads :mod:`bfdkern.data.choices` without torch."""

from bfdkern.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "choices": ("FACE_DETECTOR_NAMES",),
        "dataset": ("FaceDataset", "Sample", "StreamSampler", "endless", "make_loaders"),
        "faces": ("FaceLocator", "FaceParts", "HaarFaceLocator", "LandmarkLocator", "TemplateLocator"),
        "manipulations": ("KINDS", "MANIPULATIONS", "manipulate", "save_examples"),
        "simulator": ("simulate_collection", "simulate_uncamera"),
        "decode": ("DEFAULT_LIMITS", "Limits", "UnreadableImage", "decode_image", "image_size"),
        "transforms": ("to_tensor",),
    },
    aliases={"load_image": ("decode", "decode_image")},
)
