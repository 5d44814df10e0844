"""The settings: the classifier registry, the config schema, the key = value files and presets."""
