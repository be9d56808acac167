"""The model factory: trains, evaluates, quantises (full int8) and documents the models the edge serves."""
