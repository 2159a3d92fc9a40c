"""kernelyard: a multi-tenant Jupyter kernel gateway."""

from ._version import __version__

__all__ = ["__version__"]
