"""ModernGL renderer: UV position maps + textures composited over a background plate."""

from .renderer import FaceInput, FaceRenderer, create_context

__all__ = ["FaceInput", "FaceRenderer", "create_context"]
