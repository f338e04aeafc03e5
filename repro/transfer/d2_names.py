"""Names that both sides of the Detectron2 boundary use: `detectron2.py` (our side, no Detectron2
import) and `d2_runtime.py` (imported only where Detectron2 is installed). Neither imports the
other; both import these.
"""

RUNTIME_MODULE = "repro.transfer.d2_runtime"  # imported by run_detection; LazyConfigs name its builders
RESULTS_FILE = "results.json"  # written by rank 0 into the Detectron2 output folder
SYNTHETIC = ("synthetic_coco", "synthetic_lvis")  # detection.dataset: the CPU stand-in data
