"""The backend Protocol over a stepline server's REST API (``client.HttpBackend``)."""
