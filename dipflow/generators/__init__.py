"""Generators: activations, the paper's two-layer network, MLPs, convolutional
layers, the ConvDecoder and SkipNet, each drawing its own initialisation.

May import: `dipflow.problems`, `dipflow._core`."""
