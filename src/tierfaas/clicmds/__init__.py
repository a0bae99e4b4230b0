"""Commands of ``tierfaas`` kept out of ``cli.py``, each module registering its own on the
app (``register(app)``), and the completion of their arguments."""
