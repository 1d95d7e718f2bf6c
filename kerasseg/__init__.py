"""kerasseg: breast-mass segmentation in mammograms (CRU-Net, adversarial FCN-CRF) with TensorFlow/Keras 3."""

__version__ = "0.1.0"

from kerasseg.errors import KerassegError  # noqa: E402,F401
