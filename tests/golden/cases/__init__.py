"""The golden case modules, one per family of kinds; tests/golden/__init__.py collects them."""
