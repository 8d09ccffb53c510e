"""Data: synthetic phantoms (:mod:`.synthetic`), dataset adapters (:mod:`.datasets`), splits."""
