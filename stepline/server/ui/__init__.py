"""The web UI: server-rendered pages (Jinja2) with a little JavaScript, served by ``stepline
server`` beside the API. No front-end build and nothing fetched from the internet."""
