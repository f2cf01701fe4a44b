"""The monitor's own HTTP faces: /metrics glue aside, the web app, status page, APIs."""
