"""Serving MIRA: an OpenAI-compatible HTTP API with step streaming (FastAPI) and a web UI (Gradio).

``mira serve`` and ``mira ui`` start them; in Python, ``build_app(EditService(agent))`` gives the ASGI app.
Import the submodules directly: this package imports nothing heavy.
"""
