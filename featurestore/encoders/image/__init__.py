"""Image encoders: decoding, the shared torch forward pass, torchvision backbones, open_clip towers."""
