"""mrirobust: measure how robust accelerated MRI reconstruction methods are."""

__version__ = "0.1.0"
