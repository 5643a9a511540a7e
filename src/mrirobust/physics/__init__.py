"""MRI physics: centred FFTs, sampling masks, the multi-coil operator, ESPIRiT and coil simulation."""
