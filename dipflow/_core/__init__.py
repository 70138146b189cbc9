"""The foundation: argument checks and array helpers shared by every layer.

Imports nothing from dipflow."""
