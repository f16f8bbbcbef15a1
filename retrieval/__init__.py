"""hashlens: find photos by tags and tag photos, through sparse binary codes."""

__version__ = "0.1.0"
