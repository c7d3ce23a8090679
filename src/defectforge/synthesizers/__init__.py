"""Built-in synthesizers; importing this package registers them."""
