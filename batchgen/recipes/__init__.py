"""Recipes: a `.toml` recipe and a product sheet in, job records out."""
