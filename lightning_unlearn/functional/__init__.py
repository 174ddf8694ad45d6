"""Pure-torch cores of the methods and callbacks, usable in any training loop (no Lightning import)."""
