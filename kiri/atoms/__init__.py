"""The atoms: the registry of atoms by name (registry.py), the schema that tokenizes an atom's
observations, the detector that scores them, one module per built-in atom, and an atom's life
cycle with its background training runs. Importing the package imports none of them."""
