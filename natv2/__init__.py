"""natv2: reproducible NATv2 neural architecture transfer from OFA/OFAv2 super-networks."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``natv2.load_model`` without importing torch on ``import natv2``
    if name == "load_model":
        from natv2.model import load_model

        return load_model
    raise AttributeError(f"module 'natv2' has no attribute {name!r}")
