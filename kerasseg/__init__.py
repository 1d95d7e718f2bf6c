"""kerasseg: breast-mass segmentation in mammograms (CRU-Net, adversarial FCN-CRF) with TensorFlow/Keras 3."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

#: TensorFlow reads this when it loads. Its oneDNN CPU kernels are on by default only on some CPUs;
#: on the 2-core AMD EPYC machines this project runs on, turning them on makes a residual U-Net
#: training step 1.9x faster (README "Measured", benchmarks/). Set TF_ENABLE_ONEDNN_OPTS=0 before
#: importing kerasseg to opt out (results then differ in the last float bits only).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"  # (kerasseg.keras_private.ONEDNN_ENV)
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault(ONEDNN_ENV, "1")


from kerasseg.keras_private import onednn_enabled  # noqa: E402,F401  (the private TF query lives there)
from kerasseg.errors import KerassegError  # noqa: E402,F401
