"""kerasseg: breast-mass segmentation in mammograms (CRU-Net, adversarial FCN-CRF) with TensorFlow/Keras 3."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

#: TensorFlow reads this when it loads. Its oneDNN CPU kernels are on by default only on some CPUs;
#: on the 2-core AMD EPYC machines this project runs on, turning them on makes a residual U-Net
#: training step 1.9x faster (README "Measured", benchmarks/). Set TF_ENABLE_ONEDNN_OPTS=0 before
#: importing kerasseg to opt out (results then differ in the last float bits only).
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault(ONEDNN_ENV, "1")


def onednn_enabled() -> bool:
    """Whether TensorFlow runs (or will run, once imported) its oneDNN CPU kernels in this process."""
    if "tensorflow" in _sys.modules:  # loaded: ask it (it may have decided by CPU, env unset)
        try:
            from tensorflow.python.util import _pywrap_util_port

            return bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):  # private API moved: fall back to the variable
            pass
    return _os.environ.get(ONEDNN_ENV, "") not in ("", "0")


from kerasseg.errors import KerassegError  # noqa: E402,F401
