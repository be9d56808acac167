"""Static checks: container packaging (Dockerfiles, compose, bake) and arm64 wheels."""
