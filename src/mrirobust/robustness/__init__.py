"""Robustness experiments: adversarial perturbations of the measurements (paper section 4)."""
