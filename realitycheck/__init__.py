"""RealityCheck: is this face photo real or AI-generated, and why does the model think so."""

__version__ = "0.1.0"

from realitycheck.models import CLASSES  # noqa: E402

__all__ = ["CLASSES", "__version__"]
