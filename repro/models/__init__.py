"""Where a config meets the core: torchvision backbones with the norm swapped, and the models built from a config."""
