"""biasbench: does a speech language model treat people differently because of how they sound?"""

__version__ = "0.1.0"
