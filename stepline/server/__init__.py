"""The stepline server: the store over a REST API (``app.create_app``)."""
