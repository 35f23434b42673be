"""Synthetic fetal and infant brains and MRI acquisitions, with their ground truth."""
