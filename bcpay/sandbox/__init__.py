"""Local stand-ins for the services bcpay talks to (``bcpay sandbox``, tests).

:mod:`bcpay.sandbox.celerypay` is a complete fake of the CeleryPay gateway.
"""
