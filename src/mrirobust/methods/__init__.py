"""Reconstruction methods behind one `reconstruct(kspace, mask, **meta)` interface."""
