"""HTTP layer: thin handlers over ``interactions`` (which know nothing of HTTP)."""
