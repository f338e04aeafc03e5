"""Transfer to downstream tasks: exporting pre-trained backbones (SPEC section 4, Detection)."""
