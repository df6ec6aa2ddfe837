"""Async HTTP clients for the two upstreams: BigCommerce and CeleryPay.

``http`` holds the shared retry policy and error helpers, ``ratelimit`` the
per-store BigCommerce quota limiter; each client module has the one function
(``decipher``) that maps its upstream's answers onto :mod:`bcpay.errors`.
"""
