"""gpuseg: customer segmentation from retail transaction logs, on GPUs or CPUs.

>>> import gpuseg
>>> result = gpuseg.segment(["transactions.parquet"], out="segments", k=5)  # doctest: +SKIP
>>> km = gpuseg.KMeans(5, random_state=0).fit(X)  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .config import SegmentConfig  # noqa: E402
from .errors import GpusegError  # noqa: E402
from .pipeline import SegmentResult, segment  # noqa: E402



def __getattr__(name: str):
    # KMeans imports scikit-learn (about a second); load it only when asked for.
    if name == "KMeans":
        from .cluster.estimator import KMeans
        return KMeans
    raise AttributeError(f"module 'gpuseg' has no attribute {name!r}")


__all__ = ["KMeans", "SegmentConfig", "SegmentResult", "GpusegError", "segment", "__version__"]
