"""Image encoders: decoding (``load_image``), the shared torch forward pass, torchvision backbones, open_clip towers.

Nothing here imports torch, torchvision, open_clip or Pillow until an image is decoded or a model is built.
"""

from featurestore.encoders.image._base import IMAGE_OPTIONS, ImageEncoder, ImageInput
from featurestore.encoders.image._io import MAX_PIXELS, load_image, read_image_bytes
from featurestore.encoders.image._open_clip import OpenClipImageEncoder, OpenClipTextEncoder, open_clip_encoder
from featurestore.encoders.image._torchvision import TorchvisionEncoder

__all__ = ["IMAGE_OPTIONS", "MAX_PIXELS", "ImageEncoder", "ImageInput", "OpenClipImageEncoder", "OpenClipTextEncoder",
           "TorchvisionEncoder", "load_image", "open_clip_encoder", "read_image_bytes"]
