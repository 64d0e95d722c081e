"""streamcap: real-time face capture, PRNet-style 3D reconstruction and face-stream compression."""

__version__ = "0.1.0"
