"""Training and evaluation loops used by the binaries in bin/."""
