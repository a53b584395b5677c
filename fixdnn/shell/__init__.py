"""Shell integration: env.toml data, per-shell renderers, venv/conda activation blocks and the prompt hook.

Kept import-light: ``fixdnn hook`` imports only ``fixdnn.shell.hook`` and ``fixdnn.shell.render``.
"""
