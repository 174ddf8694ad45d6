"""Callbacks acting on the parameters, gradients and evaluation of any LightningModule."""
