"""ionqbo: keep QuickBooks Online in step with ION purchase orders and parts."""

__version__ = "0.1.0"
