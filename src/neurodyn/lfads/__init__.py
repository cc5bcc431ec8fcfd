"""LFADS modules: encoders, controller and generator, priors, augmentations, the model."""
