"""The method core: imports only torch and the standard library (a test enforces it).

Read in this order: momentum_bn (Section 3.2), sync_bn, ema, schedules, model (3.3-3.4).
Backbones (torchvision) are injected from outside: see ``repro.backbones``.
"""
