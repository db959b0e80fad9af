"""sky-mithril: the SkyPilot cloud plugin for Mithril's GPU spot market."""

__version__ = '0.1.0'
