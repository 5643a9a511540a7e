"""Data: fastMRI and mridata.org readers, the fastMRI-layout writer, simulated and synthetic data."""
