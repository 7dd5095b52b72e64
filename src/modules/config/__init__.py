"""Typed settings, read from the environment and `.env`."""

from modules.config.settings import Settings, default_model_path

__all__ = ["Settings", "default_model_path"]
