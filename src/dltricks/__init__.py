"""dltricks: deep learning tips and tricks as components that run and experiments that measure them."""

__version__ = "0.1.0"

