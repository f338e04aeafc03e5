"""The norm layers each network of the core can use, by name (no torch: the config reads them).

Student and teacher of the BYOL-style model (``model.py``): the student's BNs are ``bn`` (each
device's own statistics) or ``syncbn``; the teacher's ``bn``, ``syncbn``, ``mbn`` (Momentum BN)
or ``eman`` (Cai et al. 2021). MoCo v2's key encoder (``moco.py``): ``shuffle`` (shuffling BN),
``mbn`` or ``bn``.
"""

STUDENT_NORMS = ("bn", "syncbn")
TEACHER_NORMS = ("bn", "syncbn", "mbn", "eman")
MOCO_TEACHER_NORMS = ("shuffle", "mbn", "bn")
