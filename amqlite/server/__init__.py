"""trio drivers for the network broker."""

from .listener import Server

__all__ = ["Server"]
