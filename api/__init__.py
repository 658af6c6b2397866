"""The HTTP API of SPEC section 8 (Flask). `api.app.create_app` builds it; `pjudge serve` runs it."""
