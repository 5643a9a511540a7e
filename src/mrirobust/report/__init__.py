"""Figures and reports built from result rows."""
