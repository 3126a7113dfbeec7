"""Occupancy evaluation (Occ3D mIoU) and pictures."""
