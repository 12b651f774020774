"""trio drivers for the network broker."""

from .listener import Server, StartupError

__all__ = ["Server", "StartupError"]
