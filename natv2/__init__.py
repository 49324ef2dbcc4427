"""natv2: reproducible NATv2 neural architecture transfer from OFA/OFAv2 super-networks."""

__version__ = "0.1.0"
