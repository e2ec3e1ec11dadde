"""Handler families, one module each; `bot.app.build_app` wires them in order."""
