"""The pipeline's stages, one module per DVC stage.

torch's C++ log stays quiet unless asked for (``TORCH_CPP_LOG_LEVEL``, read once when torch
loads, so here, before any stage imports torch): a rendezvous that cannot reach node 0 would
otherwise print each retry with a C++ stack, burying the one-line error the stage ends with.
"""

import os

os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
