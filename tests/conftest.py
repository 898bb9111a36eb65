import os

# Headless rendering through EGL (Mesa on CPU machines, the driver on GPUs), before anything imports dm_control.
os.environ.setdefault("MUJOCO_GL", "egl")
