"""bcpay: CeleryPay ("OKCloud Pay") redirect payments for BigCommerce stores."""

__version__ = "0.1.0"
